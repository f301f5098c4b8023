"""What every section reads: the fit, a subsample of its draws and the posterior
predictive replicates of the training rows, computed once per report."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from qbayes.evaluation.summary import ValidationSummary
from qbayes.model.accuracy.fitfile import AccuracyFit
from qbayes.model.encoding import grouping_values
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor

DEFAULT_DRAWS = 500  # posterior draws for predictive checks and predictions


def bits_bucket(w_bits: np.ndarray) -> np.ndarray:
    """Nominal bit width rounded to whole bits, as a label ('2', '3', ... '8+')."""
    b = np.rint(np.asarray(w_bits, dtype=float))
    return np.array([("8+" if x >= 8 else f"{int(x)}") if np.isfinite(x) else "?" for x in b])


def coverage_tolerance(nominal: float, n) -> float:
    """How far an observed interval coverage may stray from ``nominal`` before a table
    flags it: 0.1, or 2.6 binomial standard errors for small groups (about 1% of
    calibrated groups flagged)."""
    n = 1 if n is None or not np.isfinite(n) or n < 1 else n
    return max(0.1, 2.6 * float(np.sqrt(nominal * (1 - nominal) / n)))


@dataclass
class Context:
    fit: Fit
    n_draws: int = DEFAULT_DRAWS
    seed: int = 0
    validation: ValidationSummary | list[ValidationSummary] | None = None  # one validation file, or one per scheme
    scenario: str | None = None  # the family of the decisions scenario (default: the one with the most rows)
    accuracy: AccuracyFit | None = None  # task accuracy given the degradation (section 7)
    notes: list[str] = field(default_factory=list)

    @property
    def data(self) -> pl.DataFrame:
        return self.fit.data

    @cached_property
    def predictor(self) -> Predictor:
        return Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)

    @cached_property
    def replicated(self) -> np.ndarray:
        """Posterior predictive degradation of every training row, shape (S, N)."""
        rows = self.predictor.prepare(self.fit.data)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.predictor.delta(rows, rng=np.random.default_rng(self.seed + 2), independent_noise=True).T

    @cached_property
    def observed(self) -> np.ndarray:
        return self.fit.data.get_column("delta").to_numpy().astype(float)

    @cached_property
    def pit(self) -> np.ndarray:
        """Probability integral transform of each observation within its replicates
        (ties split evenly, so a point mass does not bias it)."""
        rep, obs = self.replicated, self.observed[None, :]
        return (rep < obs).mean(axis=0) + 0.5 * (rep == obs).mean(axis=0)

    @cached_property
    def bits_bucket(self) -> np.ndarray:
        return bits_bucket(self.fit.data.get_column("w_bits").to_numpy())

    def levels(self, grouping: str) -> tuple[str, ...]:
        return self.fit.encoding.levels.get(grouping, ())

    def counts(self, grouping: str) -> dict[str, int]:
        vc = grouping_values(self.fit.data, grouping).drop_nulls().value_counts()
        return dict(zip(vc[grouping].to_list(), vc["count"].to_list()))
