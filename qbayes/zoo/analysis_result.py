"""The zoo analysis's settings and results (:mod:`qbayes.zoo.analysis`), as frozen records,
and their JSON form.

:class:`ZooAnalysis` is the whole result: the settings, the data's coverage, the noise
floor of delta, the D/N study (:class:`DnStudy`) and the feature study
(:class:`FeatureStudy`). :meth:`ZooAnalysis.to_json` and :meth:`ZooAnalysis.from_json`
are its one serialised form: every record is a JSON object keyed by its field names,
except that a field marked :data:`~qbayes.records.FLAT` has its keys merged into its record's object
(``{"fmt": ..., "gamma_d": ...}`` rather than ``{"fmt": ..., "fit": {"gamma_d": ...}}``),
as the files written before these records existed have them. NaN and infinities are
written as null.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from qbayes.jsonsafe import json_safe
from qbayes.records import FLAT, from_plain, to_plain

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Knobs of the analysis (defaults are what the report uses)."""

    seed: int = 0
    clear_k: float = 3.0  # clear rows: delta > clear_k * noise sigma
    bootstrap: int = 200  # resamples of models for the gamma intervals
    ci: float = 0.90
    min_rows: int = 8  # per format / bit width fit
    forest_trees: int = 150
    forest_min_leaf: int = 3
    permutation_repeats: int = 5
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 13))


# --- data and noise -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointCount:
    family: str
    size: str
    checkpoints: int


@dataclass(frozen=True)
class Coverage:
    """What the zoo table holds."""

    rows: int
    models: int
    families: list[str]
    sizes: list[str]
    formats: list[str]
    eval_sets: list[str]
    checkpoints: list[CheckpointCount]  # per family and size
    dn_range: tuple[float, float]  # tokens per parameter, lowest and highest
    features_present: list[str]


@dataclass(frozen=True)
class Noise:
    """The measurement noise of delta and the clear-row threshold it sets."""

    sigma: float
    clear_k: float
    threshold: float  # clear_k * sigma
    n_clear: int
    n_negative: int


# --- the D/N study ------------------------------------------------------------------


@dataclass(frozen=True)
class Gamma:
    """gamma_D and gamma_N with bootstrap intervals (None where not identified)."""

    n_rows: int
    n_models: int
    gamma_d: float | None = None
    gamma_d_lo: float | None = None
    gamma_d_hi: float | None = None
    gamma_n: float | None = None
    gamma_n_lo: float | None = None
    gamma_n_hi: float | None = None
    n_boot: int = 0


@dataclass(frozen=True)
class BitsGamma:
    """The fits at one nominal bit width, on clear rows and on all rows."""

    w_bits: float
    frac_clear: float
    clear: Gamma
    shift: Gamma


@dataclass(frozen=True)
class FormatGamma:
    """The fit on one format's clear rows."""

    fmt: str
    w_bits: float
    bits: float
    rows: int
    frac_clear: float
    median_delta: float
    fit: Gamma = field(metadata=FLAT)


@dataclass(frozen=True)
class Score:
    """Held-out median absolute errors of delta and of the log target."""

    mdae_delta: float | None
    mdae_ln: float | None
    n_predicted: int


@dataclass(frozen=True)
class Fold(Generic[T]):
    """The scores of the rows of one held-out level, by model (or learner)."""

    fold: str
    n: int
    scores: dict[str, T] = field(metadata=FLAT)


@dataclass(frozen=True)
class Overall(Generic[T]):
    """The scores of every held-out row, by model (or learner)."""

    n: int
    scores: dict[str, T] = field(metadata=FLAT)


@dataclass(frozen=True)
class HeldOut(Generic[T]):
    folds: list[Fold[T]]
    overall: Overall[T]


@dataclass(frozen=True)
class DnStudy:
    pooled: dict[str, Gamma]  # by target: "clear", "shift"
    per_bits: list[BitsGamma]
    per_format: list[FormatGamma]
    heldout: dict[str, HeldOut[Score]]  # by scheme; scores by model (DN_MODELS)


# --- the feature study --------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSetColumns:
    name: str
    columns: list[str]


@dataclass(frozen=True)
class FoldImprovement:
    fold: str
    rel_delta: float | None
    rel_ln: float | None


@dataclass(frozen=True)
class Improvement:
    """One feature set's held-out MdAE, and its improvement over the base set."""

    set: str
    score: Score = field(metadata=FLAT)
    rel_delta: float | None
    rel_ln: float | None
    folds_better_ln: int
    folds: list[FoldImprovement]


@dataclass(frozen=True)
class Importance:
    """The rise of held-out MdAE when one block of the 'all' model is permuted."""

    block: str
    rise_mdae_ln: float
    rise_mdae_delta: float
    per_fold_ln: dict[str, float]


@dataclass(frozen=True)
class BitsRho:
    w_bits: float
    rows: int
    rho: float | None


@dataclass(frozen=True)
class Theory:
    """How 1/2 tr(H) 10^(-SQNR/10) tracks delta."""

    rows: int
    spearman: float | None = None
    spearman_within_bits: list[BitsRho] = field(default_factory=list)
    slope_clear: float | None = None
    intercept_clear: float | None = None
    median_ratio_clear: float | None = None


@dataclass(frozen=True)
class FeatureStudy:
    sets: list[FeatureSetColumns]
    heldout: dict[str, HeldOut[dict[str, Score]]]  # by scheme; scores by learner, then feature set
    improvement: dict[str, dict[str, list[Improvement]]]  # by scheme, then learner
    permutation: dict[str, dict[str, list[Importance]]]  # by scheme, then learner
    theory: Theory


# --- the whole result ---------------------------------------------------------------


@dataclass(frozen=True)
class ZooAnalysis:
    settings: Settings
    data: Coverage
    noise: Noise
    dn: DnStudy
    features: FeatureStudy
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Strict JSON (NaN and infinities as null); see the module doc for its keys."""
        return json.dumps(json_safe(to_plain(self)), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> ZooAnalysis:
        return from_plain(cls, json.loads(text))
