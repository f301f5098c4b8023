"""The validation summary as frozen records: what ``qbayes validate`` computes
(:func:`qbayes.evaluation.crossval.summarise`), writes with ``--json PATH``, and what the
report and ``bench/validation_table.py`` read back.

:meth:`ValidationSummary.to_dict` and :meth:`ValidationSummary.from_dict` are the one way
between records and the JSON document, whose shape is::

    {"models": [str, ...],
     "overall": [{"model", "n", "mdae", "mae", "cov50", "cov90", "crps"}, ...],     ModelScores
     "overall_3bits": [the same, over rows of 3 or more nominal bits],             ModelScores
     "per_family": [{"family", "model", "n", "mdae", ..., "crps",                  FoldScores
                     and for Bayesian models "max_rhat", "divergences", "min_ess_bulk"}, ...],
     "per_cell": [{"cell", "model", "n", "mdae", ...}, ...],                        CellScores
     "calibration": [{"model", "nominal", "observed"}, ...],                        CalibrationPoint
     "gaps": [{"model", "reference", "n", "gap", "lo", "hi", "level",              MdaeGap
               "p_reference_better"}, ...],
     "brier": [{"model", "family", "n", "brier", "share"}, ...],                    BrierScore
     "settings": {"scheme", "draws", "tune", "chains", "seed", "sampler",           ValidationSettings
                  "target_accept", "rows", "row_kind", "families", "folds"}}

A row's scores (``n`` and the metrics) are one :class:`Scores` record in Python and flat
keys of the row in the JSON, as are a fold's convergence figures (:class:`FoldConvergence`).

Files written before some parts existed still load: ``overall_3bits``, ``per_cell``,
``gaps`` and ``brier`` are then empty (``brier``, when empty, is not written back),
``settings`` fields None (``scheme`` "lofo"). A metric a model cannot give (a baseline
without intervals) is NaN in the records and null in the JSON; a missing metric reads as NaN
too. A document of another shape is refused with a message that names the field, e.g.
``per_cell[1].mdae: expected a number or null, got 'small'``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field

from qbayes.errors import QBayesError
from qbayes.jsonsafe import json_safe
from qbayes.records import FLAT, to_plain

METRICS = ("mdae", "mae", "cov50", "cov90", "crps")


def as_float(x) -> float:
    """``x`` as a float; undefined (None or NaN) as ``math.nan`` itself. One NaN object for
    every undefined score lets records that lack the same scores compare equal (tuples of
    fields compare items by identity first)."""
    return math.nan if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True)
class Scores:
    """One model's scores on a set of held-out rows, from its predictive quantiles: rows
    scored, median and mean absolute error of the median, coverage of the central 50% and
    90% intervals, CRPS (:func:`qbayes.evaluation.crossval.scores`). NaN: no such score."""

    n: int | None = None
    mdae: float = math.nan
    mae: float = math.nan
    cov50: float = math.nan
    cov90: float = math.nan
    crps: float = math.nan


@dataclass(frozen=True)
class ModelScores:
    """A model's scores over all held-out rows (``overall``) or those of 3 or more bits
    (``overall_3bits``)."""

    model: str
    scores: Scores = field(metadata=FLAT)


@dataclass(frozen=True)
class FoldConvergence:
    """How well a Bayesian model's fit of one fold converged."""

    max_rhat: float = math.nan
    divergences: int | None = None
    min_ess_bulk: float = math.nan


@dataclass(frozen=True)
class FoldScores:
    """A model's scores on one fold's held-out family (``per_family``); ``convergence``
    for Bayesian models only."""

    family: str
    model: str
    scores: Scores = field(metadata=FLAT)
    convergence: FoldConvergence | None = field(default=None, metadata=FLAT)


@dataclass(frozen=True)
class CellScores:
    """A model's scores on one kind of row (``cell``, e.g. "3 bits, groups": nominal bits,
    groups or one scale per channel), pooled over the held-out families."""

    cell: str
    model: str
    scores: Scores = field(metadata=FLAT)


@dataclass(frozen=True)
class CalibrationPoint:
    """The share of a model's held-out rows (``observed``) inside its central predictive
    interval of probability ``nominal``."""

    model: str
    nominal: float
    observed: float


@dataclass(frozen=True)
class MdaeGap:
    """MdAE of ``reference`` minus MdAE of ``model`` on the ``n`` rows both predict
    (negative: ``reference`` better), its paired bootstrap interval [``lo``, ``hi``] of
    central probability ``level``, and the share of replicates in which ``reference`` is
    better (:func:`qbayes.evaluation.crossval.mdae_gaps`)."""

    model: str
    reference: str
    n: int | None = None
    gap: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    level: float = math.nan
    p_reference_better: float = math.nan


@dataclass(frozen=True)
class BrierScore:
    """The Brier score of a model's P(delta > 1 nat) (evaluation/exceed.py) on the ``n``
    held-out rows of ``family`` ("all": every fold's), where a share ``share`` of the rows
    exceed 1 nat (the score of always answering that share on these rows is
    share * (1 - share))."""

    model: str
    family: str
    n: int | None = None
    brier: float = math.nan
    share: float = math.nan


@dataclass(frozen=True)
class ValidationSettings:
    """What the validation was asked: scheme ("lofo" or "forward"), sampler settings of the
    fold fits, training rows (``rows``, of kind ``row_kind``), the held-out families and
    each one's training families (``folds``). None: not recorded. ``extra``: keys this
    version does not know (a hand-written note), kept and written back as they are."""

    scheme: str = "lofo"
    draws: int | None = None
    tune: int | None = None
    chains: int | None = None
    seed: int | None = None
    sampler: str | None = None
    target_accept: float | None = None
    rows: int | None = None
    row_kind: str | None = None
    families: tuple[str, ...] | None = None
    folds: Mapping[str, tuple[str, ...]] | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


ROW_LISTS = {
    "overall": ModelScores,
    "overall_3bits": ModelScores,
    "per_family": FoldScores,
    "per_cell": CellScores,
    "calibration": CalibrationPoint,
    "gaps": MdaeGap,
    "brier": BrierScore,
}
REQUIRED = ("models", "overall", "per_family", "calibration")


@dataclass(frozen=True, kw_only=True)
class ValidationSummary:
    """Everything ``qbayes validate`` reports, in the order of its JSON document (see the
    module docstring). ``models``: in the order they were validated."""

    models: tuple[str, ...]
    overall: tuple[ModelScores, ...]
    overall_3bits: tuple[ModelScores, ...] = ()
    per_family: tuple[FoldScores, ...]
    per_cell: tuple[CellScores, ...] = ()
    calibration: tuple[CalibrationPoint, ...]
    gaps: tuple[MdaeGap, ...] = ()
    brier: tuple[BrierScore, ...] = ()
    settings: ValidationSettings = ValidationSettings()

    @property
    def written(self) -> tuple[str, ...]:
        """The row lists the JSON document holds: all, but ``brier`` only where there are
        Brier scores, so that a file written before them reads and writes back unchanged."""
        return tuple(k for k in ROW_LISTS if k != "brier" or self.brier)

    def to_dict(self) -> dict:
        """The JSON document (strict: NaN written as null)."""
        settings = {k: v for k, v in to_plain(self.settings).items() if v is not None}
        settings.update(settings.pop("extra"))
        return json_safe(
            {
                "models": self.models,
                **{key: [to_plain(r) for r in getattr(self, key)] for key in ROW_LISTS if key in self.written},
                "settings": settings,
            }
        )

    @classmethod
    def from_dict(cls, raw, *, source: str | os.PathLike = "<validation>") -> ValidationSummary:
        """The record of a JSON document, checked: a field of the wrong type is refused by
        name, prefixed with ``source`` (the file)."""
        if not isinstance(raw, dict):
            raise QBayesError(f"{source}: not a qbayes validation file (expected a JSON object)")
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise QBayesError(
                f"{source}: not a qbayes validation file (missing {', '.join(missing)}); "
                "write one with `qbayes validate --json PATH`"
            )
        models = raw["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise QBayesError(f"{source}: 'models' must be a list of names")
        rows = {}
        for key, kind in ROW_LISTS.items():
            items = raw.get(key, [])
            if not isinstance(items, list):
                raise QBayesError(f"{source}: '{key}' must be a list")
            rows[key] = tuple(_read(kind, r, f"{source}: {key}[{i}]") for i, r in enumerate(items))
        settings = raw.get("settings", {})
        if not isinstance(settings, dict):
            raise QBayesError(f"{source}: 'settings' must be an object")
        known = _read(ValidationSettings, settings, f"{source}: settings")
        extra = {k: v for k, v in settings.items() if k == "extra" or k not in _hints(ValidationSettings)}
        return cls(models=tuple(models), **rows, settings=dataclasses.replace(known, extra=extra))


# JSON objects -> records, checked field by field against each field's type. A nested
# record (a row's Scores, FoldConvergence) is FLAT: its keys are the row's own.


@functools.cache
def _hints(kind: type) -> dict[str, object]:
    return typing.get_type_hints(kind)


def _optional(t) -> tuple[object, bool]:
    """``t`` without its ``| None``, and whether it had one."""
    if isinstance(t, types.UnionType) and type(None) in typing.get_args(t):
        rest = [a for a in typing.get_args(t) if a is not type(None)]
        return rest[0], True
    return t, False


def _read(kind: type, raw, where: str):
    """A record of ``kind`` from the JSON object ``raw``: its fields by name (unknown keys
    ignored); a field without a default must be there."""
    if not isinstance(raw, dict):
        raise QBayesError(f"{where}: expected an object")
    fields = [f for f in dataclasses.fields(kind) if f.name != "extra"]
    missing = [
        f.name for f in fields if f.name not in raw and f.default is dataclasses.MISSING and not f.metadata.get("flat")
    ]
    if missing:
        raise QBayesError(f"{where}: missing {', '.join(missing)}")
    values = {}
    for f in fields:
        t, optional = _optional(_hints(kind)[f.name])
        if f.metadata.get("flat"):
            present = not optional or any(g.name in raw for g in dataclasses.fields(t))
            values[f.name] = _read(t, raw, where) if present else None
        elif f.name in raw:
            values[f.name] = _value(t, optional, raw[f.name], f"{where}.{f.name}")
    return kind(**values)


def _value(t, optional: bool, x, where: str):
    if x is None and optional:
        return None
    if t is str:
        if not isinstance(x, str):
            raise QBayesError(f"{where}: expected a name, got {x!r}")
        return x
    if t in (float, int):
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
            raise QBayesError(f"{where}: expected a number or null, got {x!r}")
        if t is float:
            return as_float(x)
        if x is None or math.isnan(x):
            return None
        if x != int(x):
            raise QBayesError(f"{where}: expected a whole number or null, got {x!r}")
        return int(x)
    if t == tuple[str, ...]:
        if not isinstance(x, list) or not all(isinstance(s, str) for s in x):
            raise QBayesError(f"{where}: expected a list of names, got {x!r}")
        return tuple(x)
    if t == Mapping[str, tuple[str, ...]]:
        if not isinstance(x, dict):
            raise QBayesError(f"{where}: expected an object, got {x!r}")
        return {str(k): _value(tuple[str, ...], False, v, f"{where}.{k}") for k, v in x.items()}
    raise TypeError(f"{where}: no reader for {t}")
