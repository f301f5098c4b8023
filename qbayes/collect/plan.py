"""What a collection run is asked to do, and the pieces it is cut into.

* :class:`CollectOptions`: one model, a grid, and where the rows go;
* :class:`Config`: one quantized configuration (method x format x calibration set);
* :class:`Step`: one unit of the run, skipped when its rows are already in the shard;
* :func:`stage`: labels an exception with the stage it failed in (for the failures table).

The runner (:mod:`qbayes.collect.runner`) and the feature steps
(:mod:`qbayes.collect.features`) both build on these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qbayes.collect.grid import Grid
from qbayes.collect.methods.base import Method
from qbayes.errors import QBayesError
from qbayes.formats import Format, parse_format


@dataclass(frozen=True)
class CollectOptions:
    model_path: Path
    family: str
    grid: Grid
    out: Path
    name: str | None = None  # model name in the database; default: the directory name
    device: str = "cpu"
    seed: int = 0
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Config:
    """One quantized configuration: a method, a format and (maybe) a calibration set.
    ``fmt`` is None when the format spec did not parse (``problem`` says why)."""

    method: Method
    spec: str
    fmt: Format | None
    problem: str | None
    calib: str | None
    options: object

    @classmethod
    def make(cls, method: Method, spec: str, calib: str | None, options: object) -> Config:
        try:
            return cls(method, spec, parse_format(spec), None, calib, options)
        except QBayesError as exc:
            return cls(method, spec, None, str(exc), calib, options)

    @property
    def label(self) -> str:
        return f"{self.method.name}/{self.fmt.label if self.fmt else self.spec}/{self.calib or '-'}"

    @property
    def dtype_label(self) -> str:
        return self.fmt.label + self.method.label_suffix


@dataclass
class Step:
    label: str
    stage: str
    done: Callable[[], bool]
    run: Callable[[], str | None]  # returns a short result for the log


@contextlib.contextmanager
def stage(name: str):
    """Label an exception raised inside with the stage it failed in (for the failures table)."""
    try:
        yield
    except Exception as exc:
        exc.stage = name
        raise
