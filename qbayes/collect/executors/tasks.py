"""Splitting a collection (models x grid) into tasks whose rows are self-contained.

Per model:

* ``MODEL/baseline``: load the model, the unquantized baseline on every evaluation text
  and the weight statistics (cheap);
* ``MODEL/features``: activation outliers and the loss landscape (only when the grid
  turns either on);
* ``MODEL/METHOD``: every configuration (format x calibration set) of one method,
  including the method's self-check, which runs once per task as it does once per run.

Every task but the baseline runs after its model's baseline task and starts from its
rows: quantized results are measured against that baseline, and a task's collector
then skips the baseline and weight steps instead of recomputing them. A task is complete
when every step of it has its rows in the database; complete tasks are not run again.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from qbayes.collect.executors.base import CollectRequest
from qbayes.collect.grid import FeatureSettings, Grid
from qbayes.collect.manifest import ModelEntry
from qbayes.errors import QBayesError

BASELINE = "baseline"
FEATURES = "features"
TASKS_DIR = "_tasks"  # under --out: one shard directory per task


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work: a collector run of one model on a part of the grid."""

    task_id: str  # "MODEL/KIND"
    kind: str  # "baseline", "features" or a method name
    model: ModelEntry
    grid: Grid  # the part of the grid this task runs
    shard_dir: Path  # where the task writes its own shard
    device: str = "cpu"
    seed: int = 0
    threads: int = 1  # torch threads (the CPUs the task asked for)

    @property
    def after_baseline(self) -> bool:
        return self.kind != BASELINE


def split(request: CollectRequest, *, threads: int = 1) -> list[TaskSpec]:
    """The tasks of a request, baseline tasks first."""
    grid = request.grid
    light = _light_features(grid.features)
    root = Path(request.out).resolve() / TASKS_DIR  # absolute: workers run elsewhere
    out: list[TaskSpec] = []

    def task(model: ModelEntry, kind: str, part: Grid) -> TaskSpec:
        return TaskSpec(
            f"{model.name}/{kind}",
            kind,
            model,
            part,
            root / _dir_name(model.name, kind),
            request.device,
            request.seed,
            threads,
        )

    for model in request.models:
        model = dataclasses.replace(model, path=Path(model.path).resolve())
        out.append(task(model, BASELINE, dataclasses.replace(grid, methods=(), features=light)))
        if grid.features.landscape or grid.features.outliers:
            out.append(task(model, FEATURES, dataclasses.replace(grid, methods=())))
        for spec in grid.methods:
            if spec.formats:
                out.append(task(model, spec.name, dataclasses.replace(grid, methods=(spec,), features=light)))
    dirs = [t.shard_dir for t in out]
    if len(set(dirs)) != len(dirs):
        raise QBayesError(
            "model names that differ only in punctuation would share a task directory: "
            + ", ".join(sorted({t.model.name for t in out}))
        )
    return sorted(out, key=lambda t: t.after_baseline)


def _light_features(f: FeatureSettings) -> FeatureSettings:
    """The grid's feature settings without the expensive features (they get a task of
    their own); weight statistics and per-layer SQNR stay."""
    return dataclasses.replace(f, landscape=False, outliers=False)


def _dir_name(model: str, kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}__{kind}")
