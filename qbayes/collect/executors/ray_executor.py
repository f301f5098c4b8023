"""The Ray executor: collection tasks on a Ray cluster, merged into ``--out`` as they finish.

The driver (``qbayes collect --executor ray``):

1. splits the request into tasks (:mod:`.tasks`) and leaves out every task whose rows
   ``--out`` already holds (``--force``: none is left out, and the rows they write
   replace the old ones);
2. connects to the cluster (``--address``; without one, Ray's own lookup: ``RAY_ADDRESS``,
   then a cluster started on this machine, else a new local instance), and submits one
   Ray task per unit: 1 CPU, plus 1 GPU when the device is cuda; a model's other tasks
   take its baseline task's result as an argument, so Ray runs them after it;
3. merges each finished task's shard into ``--out`` (:func:`qbayes.db.merge.merge`:
   rows already there are kept once, conflicting rows are refused) and saves it
   atomically, so an interrupted driver loses no finished task;
4. lists what failed, with the reasons.

A task whose worker dies, or that raises, is retried up to ``retries`` times
(``max_retries`` and ``retry_exceptions``); a retried task resumes from the shard its
earlier attempt saved when it lands on the same file system. Model directories and
``--out`` must be visible at the same paths from the driver and every worker (a shared
file system); every node needs the same Python environment with qbayes and Ray.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rich.console import Console

from qbayes.collect.executors.base import CollectRequest, Outcome
from qbayes.collect.executors.ray_progress import TaskProgress
from qbayes.collect.executors.rows import count, model_rows, overlay
from qbayes.collect.executors.tasks import BASELINE, TaskSpec, split
from qbayes.collect.executors.worker import AttemptLog, TaskResult, run_task
from qbayes.collect.features import FeatureSteps
from qbayes.collect.plan import CollectOptions
from qbayes.collect.runner import Collector
from qbayes.collect.shard import Shard
from qbayes.db import store
from qbayes.db.database import Database
from qbayes.db.merge import MergeConflict, merge
from qbayes.errors import QBayesError

INSTALL = "pip install -e '.[ray]'"
POLL_S = 0.5


def import_ray():
    """The ray module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise QBayesError(
            f"--executor ray needs Ray ({exc}); install the ray extra: {INSTALL}, in the "
            "driver's environment and on every node of the cluster"
        ) from exc
    return ray


def pending_steps(task: TaskSpec, shard: Shard) -> list[str]:
    """The steps of ``task`` whose rows ``shard`` lacks; empty when the task is complete.
    Unknown method names raise here, before anything is submitted."""
    # the collector only plans here: no model is loaded, and its own (absent) shard is
    # replaced by the database being checked
    opts = CollectOptions(
        model_path=task.model.path,
        family=task.model.family,
        grid=task.grid,
        out=task.shard_dir / ".plan",
        name=task.model.name,
        device="cpu",
        seed=task.seed,
    )
    c = Collector(opts, Console(quiet=True))
    c.shard = shard
    steps = c.baseline_steps() + c.tasks.baseline_steps() + FeatureSteps(c).steps()
    steps += [c.config_step(cfg) for cfg in c.plan()]
    return [s.label for s in steps if not s.done()]


def remote_function(ray, fn, gpus: int):
    """``fn`` as a Ray remote function. A GPU task runs in a fresh worker process
    (``max_calls=1``: Ray's default for functions declared with GPUs, which
    ``ray.remote(fn).options(num_gpus=...)`` does not get, and which ``.options`` cannot
    set), so whatever a task leaves in GPU memory goes with its process."""
    return ray.remote(max_calls=1)(fn) if gpus else ray.remote(fn)


def task_options(cpus: int, gpus: int, retries: int) -> dict:
    """Ray options of one collection task."""
    return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": retries, "retry_exceptions": True}


def client_authentication() -> None:
    """Make this driver authenticate the way ``ray start`` on this machine would: Ray turns
    token authentication on for a head started where a token is available (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) unless ``RAY_AUTH_MODE`` says
    otherwise, but never for a client given an explicit address; without this, a cluster
    started on a machine that has used Ray refuses ``--address`` clients. An explicit
    ``RAY_AUTH_MODE`` is left as it is."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class RayExecutor:
    def __init__(self, *, address: str | None = None, retries: int = 2, cpus_per_task: int = 1):
        self.address = address
        self.retries = retries
        self.cpus_per_task = cpus_per_task

    def run(self, request: CollectRequest, console: Console) -> Outcome:
        ray = import_ray()
        out = Path(request.out)
        tasks = split(request, threads=self.cpus_per_task)
        current = Shard(out)  # what --out holds (loaded and validated)
        todo = tasks if request.force else [t for t in tasks if pending_steps(t, current)]
        if not todo:
            return Outcome([f"ray: all {len(tasks)} task(s) already complete in {out}; nothing submitted"])
        self._connect(ray, request)
        try:
            return _Run(
                ray,
                request,
                todo,
                current.db,
                console,
                retries=self.retries,
                cpus=self.cpus_per_task,
                complete=len(tasks) - len(todo),
            ).run()
        finally:
            ray.shutdown()

    def _connect(self, ray, request: CollectRequest) -> None:
        client_authentication()
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:
            raise QBayesError(
                f"cannot connect to a Ray cluster at {self.address or '(Ray default)'}: {exc} (a cluster with "
                "token authentication needs its token here too: RAY_AUTH_TOKEN or ~/.ray/auth_token)"
            ) from exc
        resources = ray.cluster_resources()
        if request.device == "cuda" and resources.get("GPU", 0) < 1:
            ray.shutdown()
            raise QBayesError(
                f"--device cuda: the Ray cluster at {self.address or '(Ray default)'} has no GPU "
                "(start its workers with GPUs, or collect with --device cpu)"
            )
        if resources.get("CPU", 0) < self.cpus_per_task:
            ray.shutdown()
            raise QBayesError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPU(s); each task needs {self.cpus_per_task}"
            )


class _Run:
    """One driver run: submit, wait, merge, report."""

    def __init__(
        self,
        ray,
        request: CollectRequest,
        todo: list[TaskSpec],
        db: Database,
        console: Console,
        *,
        retries: int,
        cpus: int,
        complete: int,
    ):
        self.ray, self.request, self.todo, self.db, self.console = ray, request, todo, db, console
        self.retries, self.cpus, self.complete = retries, cpus, complete
        self.out = Path(request.out)
        self.done: dict[str, TaskResult] = {}
        self.failed: dict[str, str] = {}  # task id -> reason
        self.attempts: dict[str, list[dict]] = {}  # from the AttemptLog actor
        self._snapshot = None  # the AttemptLog call in flight
        self.attempts_problem: str | None = None
        self.outcome = Outcome()

    def run(self) -> Outcome:
        log = self.ray.remote(num_cpus=0)(AttemptLog).remote()
        pending = self.submit(log)
        with TaskProgress(self.console, len(self.todo), enabled=self.request.progress) as progress:
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
                for ref in sorted(ready, key=lambda r: pending[r].after_baseline):  # baselines first
                    task = pending.pop(ref)
                    self.finish(task, ref, progress)
                self.poll_attempts(log)
                running = sum(1 for t in self.attempts if t not in self.done and t not in self.failed)
                progress.update(
                    done=len(self.done), running=running, failed=len(self.failed), retried=len(self.retried())
                )
        self._snapshot = None  # a fresh look: every attempt has been acknowledged by now
        self.poll_attempts(log, wait_s=10)
        return self.report()

    def submit(self, log) -> dict:
        gpus = 1 if self.request.device == "cuda" else 0
        remote = remote_function(self.ray, run_task, gpus)
        seeds, baselines, pending = {}, {}, {}
        for task in self.todo:
            name = task.model.name
            if self.request.force:
                shutil.rmtree(task.shard_dir, ignore_errors=True)  # a fresh shard: its rows replace the old
            elif name not in seeds:
                rows = model_rows(self.db, name)
                seeds[name] = self.ray.put(rows) if rows.models.height or rows.results.height else None
            ref = remote.options(name=task.task_id, **task_options(self.cpus, gpus, self.retries)).remote(
                task, seeds.get(name), baselines.get(name) if task.after_baseline else None, log
            )
            if task.kind == BASELINE:
                baselines[name] = ref
            pending[ref] = task
        return pending

    def finish(self, task: TaskSpec, ref, progress: TaskProgress) -> None:
        try:
            result: TaskResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            base = f"{task.model.name}/{BASELINE}"
            reason = f"not run: {base} failed" if task.after_baseline and base in self.failed else self._reason(exc)
            self.failed[task.task_id] = reason
            progress.finished(task.task_id, f"failed: {reason}")
            return
        if result.db is not None:
            try:
                self.merge(task, result.db)
            except QBayesError as exc:  # conflicting rows (MergeConflict), an invalid shard
                what = "its rows conflict with" if isinstance(exc, MergeConflict) else "could not merge into"
                self.failed[task.task_id] = f"{what} {self.out}: {exc}"
                progress.finished(task.task_id, f"failed: {what} {self.out}")
                return
        if result.error is not None:
            self.failed[task.task_id] = result.error
            progress.finished(task.task_id, f"failed: {result.error.splitlines()[0]}")
            return
        self.done[task.task_id] = result
        self.outcome.failures += [f"{task.task_id}: {line.splitlines()[0]}" for line in result.failed]
        progress.finished(
            task.task_id,
            f"{len(result.ran)} step(s) ran, {len(result.skipped)} already done, "
            f"{len(result.failed)} failed (attempt {result.attempt}, {result.host})",
        )

    def merge(self, task: TaskSpec, rows: Database) -> None:
        """Merge a task's shard into --out and save it (and keep a copy of the shard in
        the task's directory when the worker's copy is on another machine)."""
        if self.request.force:
            merged = overlay(self.db, rows)
        else:
            merged, _ = merge([self.db, rows])
        store.save(merged, self.out)
        self.db = merged
        if not any(task.shard_dir.glob("*.parquet")):
            store.save(rows, task.shard_dir)

    def retried(self) -> dict[str, int]:
        return {t: len(a) for t, a in self.attempts.items() if len(a) > 1}

    def report(self) -> Outcome:
        o = self.outcome
        total = len(self.todo) + self.complete
        o.lines.append(
            f"ray: {total} task(s): {len(self.done)} ran, {self.complete} already complete, "
            f"{len(self.failed)} failed; {self.out}: {count(self.db)}"
        )
        for task_id, n in sorted(self.retried().items()):
            o.lines.append(f"retried: {task_id} ({n} attempts)")
        if self.attempts_problem:
            o.lines.append(self.attempts_problem)
        for task_id, reason in self.failed.items():
            n = len(self.attempts.get(task_id, []))
            tries = f" after {n} attempt(s)" if n > 1 else ""
            o.failures.append(f"task {task_id}{tries}: {reason.splitlines()[0]}")
        o.lost = len(self.failed)
        return o

    def poll_attempts(self, log, wait_s: float = 0) -> None:
        """Refresh ``attempts`` from the AttemptLog actor without blocking the merges
        (``wait_s``: how long to wait for the answer at the end of the run)."""
        if self._snapshot is None:
            self._snapshot = log.snapshot.remote()
        ready, _ = self.ray.wait([self._snapshot], timeout=wait_s)
        if not ready:
            return
        try:
            self.attempts = self.ray.get(self._snapshot)
        except self.ray.exceptions.RayError as exc:  # progress only: collection goes on without it
            self.attempts_problem = f"attempt counts are incomplete: the attempt log failed ({type(exc).__name__})"
        self._snapshot = log.snapshot.remote()

    def _reason(self, exc) -> str:
        cause = getattr(exc, "cause", None)
        if cause is not None and not isinstance(cause, self.ray.exceptions.RayError):
            return f"{type(cause).__name__}: {_first_line(str(cause))}"
        return f"{type(exc).__name__}: {_first_line(str(exc))}"


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
