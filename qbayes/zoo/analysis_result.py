"""The zoo analysis's settings and results (:mod:`qbayes.zoo.analysis`), and their JSON form."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from qbayes.jsonsafe import json_safe


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


@dataclass(frozen=True)
class ZooAnalysis:
    """Results, JSON-able through :meth:`to_dict` (NaN becomes null)."""

    settings: dict
    data: dict
    noise: dict
    dn: dict
    features: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return json_safe(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)
