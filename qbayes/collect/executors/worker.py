"""What runs on a worker: one task, in its own shard directory.

:func:`run_task` is a plain function (the Ray executor wraps it in ``ray.remote``):

1. record the attempt (``attempts.jsonl`` in the task's directory and, when given, the
   driver's :class:`AttemptLog` actor), so retries are visible;
2. seed the task's shard with the rows it starts from (the model's rows already in the
   database, the baseline task's rows) over whatever an earlier attempt left there, so
   the collector skips every step already done;
3. run the :class:`~qbayes.collect.runner.Collector` on the task's part of the grid, its
   log going to ``log.txt`` in the task's directory;
4. return the whole shard as a :class:`TaskResult` for the driver to merge.

A :class:`~qbayes.errors.QBayesError` (a model that cannot be loaded, out of memory at
load included, or a bad option) is returned as the task's error, not raised: retrying
cannot fix it, and the driver counts the task as lost (exit 1). Anything else is raised,
and Ray retries the task.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from qbayes.collect.executors.base import offline_environment, quiet_transformers
from qbayes.collect.executors.rows import overlay
from qbayes.collect.executors.tasks import TaskSpec
from qbayes.collect.plan import CollectOptions
from qbayes.collect.runner import Collector
from qbayes.db import store
from qbayes.db.database import Database
from qbayes.errors import QBayesError

ATTEMPTS = "attempts.jsonl"
LOG = "log.txt"


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    db: Database | None  # the task's shard (None when nothing was written)
    error: str | None = None  # why the task could not run (not retried)
    ran: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # configurations that failed, "label [stage] type: message"
    attempt: int = 1
    host: str = ""


class AttemptLog:
    """Which tasks have started, how often and where (a Ray actor in the driver's job)."""

    def __init__(self):
        self._attempts: dict[str, list[dict]] = {}

    def started(self, task_id: str, info: dict) -> None:
        self._attempts.setdefault(task_id, []).append(info)

    def snapshot(self) -> dict[str, list[dict]]:
        return self._attempts


def run_task(
    task: TaskSpec, seed: Database | None = None, baseline: TaskResult | None = None, attempts=None
) -> TaskResult:
    """Run one task; ``seed`` and ``baseline`` rows go into its shard first; ``attempts``
    is an :class:`AttemptLog` actor handle (or None)."""
    if baseline is not None and baseline.error is not None:
        return TaskResult(task.task_id, None, error=f"not run: {baseline.task_id} failed")
    offline_environment()
    info = _record_attempt(task, attempts)
    import torch

    torch.set_num_threads(task.threads)
    quiet_transformers()
    db = _load(task.shard_dir) or Database()
    for rows in (seed, baseline.db if baseline is not None else None):
        if rows is not None:
            db = overlay(db, rows)
    store.save(db, task.shard_dir)
    opts = CollectOptions(
        model_path=task.model.path,
        family=task.model.family,
        grid=task.grid,
        out=task.shard_dir,
        name=task.model.name,
        device=task.device,
        seed=task.seed,
        progress=False,
    )
    with open(task.shard_dir / LOG, "a", encoding="utf-8") as fh:
        console = Console(file=fh, soft_wrap=True, no_color=True, width=160)
        console.print(
            f"--- {task.task_id}: attempt {info['attempt']} on {info['host']} (pid {info['pid']})"
            + (f"; {info['note']}" if "note" in info else "")
        )
        try:
            summary = Collector(opts, console).run()
        except QBayesError as exc:
            return TaskResult(
                task.task_id, _load(task.shard_dir), error=str(exc), attempt=info["attempt"], host=info["host"]
            )
    return TaskResult(
        task.task_id,
        _load(task.shard_dir),
        ran=tuple(summary.ran),
        skipped=tuple(summary.skipped),
        failed=tuple(summary.failed),
        attempt=info["attempt"],
        host=info["host"],
    )


def _record_attempt(task: TaskSpec, attempts) -> dict:
    task.shard_dir.mkdir(parents=True, exist_ok=True)
    log = task.shard_dir / ATTEMPTS
    n = 1 + (sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0)
    info = {"attempt": n, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(info) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if attempts is not None:
        import ray

        try:  # acknowledged, so the driver's count of attempts is complete when the task ends
            ray.get(attempts.started.remote(task.task_id, info), timeout=30)
        except ray.exceptions.RayError as exc:  # progress and report only: the task goes on
            info["note"] = f"the driver's attempt log is unreachable ({type(exc).__name__})"
    return info


def _load(path: Path) -> Database | None:
    return store.load(path) if any(path.glob("*.parquet")) else None
