"""Downstream task accuracy through lm-evaluation-harness, on the model in memory.

With ``[tasks] names`` in the grid (or ``qbayes collect --tasks``), every model a run
measures, the unquantized baseline and each quantized configuration, is also scored on
those lm-eval tasks: ``lm_eval.simple_evaluate`` on an ``HFLM`` wrapped around the model
object the run holds, so a quantized model is scored exactly as its perplexity was, with
nothing saved to disk and reloaded. Each (task, metric) becomes a row of the database's
``accuracy`` table (:data:`qbayes.db.schema.ACCURACY`): accuracy in percent, its standard
error in points (lm-eval's: the sample standard deviation over items / sqrt(n) for mean
metrics, a bootstrap for the others), the items scored, the task's version and the
harness version, with the run's provenance.

Which tasks exist is lm-eval's business: its own task definitions, and the directories of
local YAML task files named in ``[tasks] include`` / ``--task-include`` (lm-eval's
``include_path``). A local task reads local files through ``dataset_path: json`` with
``dataset_kwargs.data_files``, so a run needs no hub; a hub task's data must already be in
the Hugging Face cache (collection runs offline). The code path is the same for both.

The preflight (:func:`check`) resolves the names before any model is loaded: a name lm-eval
does not know is refused with its close matches, a tag becomes the tasks it stands for
(the rows are per task), and a group that reports no score of its own is refused with its
tasks listed. The baseline's scores are one step of the run; a configuration's are scored
right after its perplexity, while its quantized model is in memory, and a failure there
fails the configuration's tasks only (its perplexity rows stay).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import io
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import torch

from qbayes.collect.grid import DTYPES, TaskSettings
from qbayes.collect.plan import Step, stage

HARNESS = "lm-eval"  # the distribution whose version the rows record
INSTALL = "pip install -e '.[collect]'"


@dataclass(frozen=True)
class TaskScore:
    """One metric of one task, as the accuracy table records it."""

    task: str
    metric: str  # lm-eval's metric name, with its filter when that is not "none" (exact_match,strict-match)
    shots: int
    acc: float  # percent
    acc_se: float | None  # percentage points
    n_items: int | None
    task_version: str | None


@dataclass(frozen=True)
class TaskProblem:
    """What the preflight refuses ("task 'x'", "task directory d"), and why."""

    what: str
    problem: str


def harness_version() -> str | None:
    try:
        return metadata.version(HARNESS)
    except metadata.PackageNotFoundError:
        return None


def task_manager(settings: TaskSettings):
    """lm-eval's index of the task definitions ``settings`` needs. Indexing lm-eval's own
    thousands of YAML files takes seconds; when every task named is a task of the local
    directories, only those are indexed (the same definitions: lm-eval lets local files
    override its own)."""
    if settings.include:
        local = _index(settings.include, defaults=False)
        if set(settings.names) <= set(local.all_subtasks):
            return local
    return _index(settings.include, defaults=True)


@functools.lru_cache(maxsize=4)
def _index(include: tuple[str, ...], *, defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include) or None, include_defaults=defaults)


# --- before the run -------------------------------------------------------------------


def check(settings: TaskSettings) -> tuple[TaskSettings, list[TaskProblem]]:
    """``settings`` with tags expanded into their tasks, and the names that cannot run."""
    if not settings.names:
        return settings, []
    if importlib.util.find_spec("lm_eval") is None:
        what = "tasks " + ", ".join(settings.names)
        return settings, [TaskProblem(what, f"scoring tasks needs lm-eval: {INSTALL}")]
    missing_dirs = [d for d in settings.include if not Path(d).is_dir()]
    if missing_dirs:
        return settings, [TaskProblem(f"task directory {d}", "does not exist") for d in missing_dirs]
    manager = task_manager(settings)
    index = manager.task_index
    tags, groups = set(manager.all_tags), set(manager.all_groups)
    names: list[str] = []
    problems: list[TaskProblem] = []
    for name in settings.names:
        entry = index.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
            hint = f" (close: {', '.join(close)})" if close else ""
            where = " or in " + ", ".join(settings.include) if settings.include else ""
            problems.append(
                TaskProblem(f"task '{name}'", f"lm-eval knows no task '{name}'{hint}; tasks are lm-eval's{where}")
            )
        elif name in tags:
            names += sorted(entry.tags)
        elif name in groups and not (entry.cfg or {}).get("aggregate_metric_list"):
            members = [t if isinstance(t, str) else t.get("task", "?") for t in (entry.cfg or {}).get("task", [])]
            problems.append(
                TaskProblem(
                    f"task '{name}'",
                    f"a group without a score of its own: name its tasks instead ({', '.join(members)})",
                )
            )
        else:
            names.append(name)
    resolved = replace(settings, names=tuple(dict.fromkeys(names)))
    return resolved, problems or _unreadable(resolved)


def _unreadable(settings: TaskSettings) -> list[TaskProblem]:
    """Tasks whose definition or data cannot be loaded: a hub task whose data is not in
    the local Hugging Face cache (collection runs offline), a local file that is missing."""
    manager = task_manager(settings)
    out = []
    for name in settings.names:
        try:
            with _quiet():
                manager.load([name])
        except Exception as exc:  # lm-eval and datasets raise many kinds; the message says which
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            out.append(
                TaskProblem(
                    f"task '{name}'",
                    f"cannot be loaded ({type(exc).__name__}: {text}); a hub task's data must be in the local "
                    "Hugging Face cache (collection runs offline), a local task's files where its YAML says",
                )
            )
    return out


# --- scoring --------------------------------------------------------------------------


def score(model: torch.nn.Module, tokenizer, settings: TaskSettings, seed: int) -> list[TaskScore]:
    """Every accuracy-like metric (higher is better, between 0 and 1) of every task and
    group score lm-eval reports for ``settings.names``, on ``model`` as it is in memory."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with _quiet():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(settings.names),
            num_fewshot=settings.shots,
            limit=settings.limit or None,
            bootstrap_iters=settings.bootstrap_iters,
            log_samples=False,
            task_manager=task_manager(settings),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    return parse_results(out, settings.shots)


@contextlib.contextmanager
def _quiet():
    """lm-eval's log below errors and its standard error silenced: its progress bars and
    the git lookup it runs in the working directory would break the run's own progress
    display, which reports each task's score. Its exceptions still propagate."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)  # what subprocesses and native code write
        with contextlib.redirect_stderr(io.StringIO()):  # what Python code writes
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        logger.setLevel(level)


def parse_results(out: dict, shots: int) -> list[TaskScore]:
    """:class:`TaskScore` rows from ``simple_evaluate``'s result dictionary."""
    scores = []
    for task, metrics in out["results"].items():
        better = out.get("higher_is_better", {}).get(task, {})
        version = out.get("versions", {}).get(task)
        n = out.get("n-samples", {}).get(task, {}).get("effective", metrics.get("sample_len"))
        n_shot = out.get("n-shot", {}).get(task, shots)
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            name, filt = key.split(",", 1)
            if not better.get(name, False) or not _fraction(value):
                continue
            se = metrics.get(f"{name}_stderr,{filt}")
            scores.append(
                TaskScore(
                    task=task,
                    metric=name if filt == "none" else key,
                    shots=int(n_shot) if isinstance(n_shot, int) else shots,
                    acc=100.0 * float(value),
                    acc_se=100.0 * float(se) if _number(se) else None,
                    n_items=int(n) if isinstance(n, int) else None,
                    task_version=None if version is None else str(version),
                )
            )
    return scores


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value) -> bool:
    return _number(value) and 0.0 <= value <= 1.0


# --- the run's steps ------------------------------------------------------------------


class TaskSteps:
    """The task scores of one collection run: the baseline's as a step, each quantized
    configuration's beside its perplexity. ``collector`` is the
    :class:`~qbayes.collect.runner.Collector` (its loaded model, shard, provenance)."""

    def __init__(self, collector):
        self.c = collector
        self.settings: TaskSettings = collector.grid.tasks

    def baseline_steps(self) -> list[Step]:
        if not self.settings.names:
            return []
        label, bits = DTYPES[self.c.grid.eval.dtype]
        columns = {
            "method": "none",
            "w_kind": "float",
            "w_bits": float(bits),
            "group_size": None,
            "w_bits_eff": float(bits),
            "dtype_label": label,
            "act_bits": float(bits),
            "calib_set": None,
        }
        return [
            Step(
                "baseline/tasks",
                "tasks",
                lambda: self.done(columns),
                lambda: self.measure(self.c.loaded.model, columns),
            )
        ]

    def done(self, columns: dict) -> bool:
        """Whether the shard holds a score of every task for the configuration ``columns``
        (a results row's method, dtype_label and calib_set)."""
        if not self.settings.names:
            return True
        ident = {k: columns[k] for k in ("method", "dtype_label", "calib_set")}
        return all(self.c.shard.has_accuracy(model=self.c.name, task=t, **ident) for t in self.settings.names)

    def measure(self, model: torch.nn.Module, columns: dict) -> str:
        """Score ``model`` on the tasks and add its rows; ``columns`` are the configuration's
        (method, format, calibration) as its results rows carry them."""
        t0 = time.perf_counter()
        with stage("tasks"):
            scores = score(model, self.c.loaded.tokenizer, self.settings, self.c.opts.seed)
        if not scores:
            raise ValueError(f"lm-eval reported no accuracy-like metric for {', '.join(self.settings.names)}")
        wall = time.perf_counter() - t0
        self.c.shard.add_accuracy([self.row(s, columns, wall) for s in scores])
        return ", ".join(f"{s.task} {s.metric} {s.acc:.1f}%" for s in scores)

    def measure_config(self, model: torch.nn.Module, columns: dict, label: str) -> str | None:
        """A quantized configuration's scores, after its perplexity rows are in: a failure
        here is recorded as the configuration's tasks failing, and the run goes on."""
        if not self.settings.names:
            return None
        try:
            return self.measure(model, columns)
        except Exception as exc:  # the configuration's perplexity rows stand without its task scores
            self.c.fail(
                f"{label}/tasks", "tasks", type(exc).__name__, str(exc).strip()[:600] or type(exc).__name__, exc
            )
            return "tasks failed"

    def row(self, s: TaskScore, columns: dict, wall_s: float) -> dict:
        limit = f", limited to {self.settings.limit} items" if self.settings.limit else ""
        return {
            **{k: columns[k] for k in CONFIG_COLUMNS},
            "model": self.c.name,
            "task": s.task,
            "shots": s.shots,
            "metric": s.metric,
            "acc": s.acc,
            "acc_se": s.acc_se,
            "n_items": s.n_items,
            "task_version": s.task_version,
            "harness_version": harness_version(),
            "note": f"lm-eval {s.task} on the model in memory{limit}",
            **self.c.prov.columns(wall_s),
        }


# the configuration columns an accuracy row shares with the results row of the same model
CONFIG_COLUMNS = ("method", "w_kind", "w_bits", "group_size", "w_bits_eff", "dtype_label", "act_bits", "calib_set")
