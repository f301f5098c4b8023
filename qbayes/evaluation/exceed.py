"""Whether a configuration breaks the model: the probability that its degradation exceeds
:data:`EXCEED` (1 nat per token, perplexity x2.7), scored by the Brier score.

A user deciding whether to try a 2-bit configuration asks first whether it holds. Every
model of ``qbayes validate`` gives that probability: a Bayesian model from its predictive
draws (a [collapse] spec's mixture included), a quantile baseline from its quantiles
(:func:`from_quantiles`), and two classifiers made for the question (:data:`CLASSIFIERS`): a
random-forest classifier on the random-forest baseline's features, and the training
families' frequency of Δ > 1 nat per (method, bits, grouping) cell.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from qbayes.evaluation.baselines import MIN_CELL, CellMedian, RandomForest
from qbayes.registry import Registry

EXCEED = 1.0  # nats per token


def outcome(y: np.ndarray) -> np.ndarray:
    """1.0 where the observed degradation exceeds :data:`EXCEED`, else 0.0."""
    return (np.asarray(y) > EXCEED).astype(np.float64)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between the probabilities ``p`` and the outcomes of ``y``
    (rows with a NaN probability left out); NaN with no row."""
    ok = ~np.isnan(p)
    return float(np.mean((p[ok] - outcome(y)[ok]) ** 2)) if ok.any() else float("nan")


def from_draws(delta: np.ndarray) -> np.ndarray:
    """(N,) the share of each row's predictive draws (N, S) above :data:`EXCEED`."""
    return (delta > EXCEED).mean(axis=1)


def from_quantiles(q: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(N,) P(delta > EXCEED) from predictive quantiles ``q`` (len(grid), N) at the levels
    ``grid``: the CDF interpolated linearly between them, and beyond the outermost ones half
    the tail's probability (a quantile baseline says nothing finer there)."""
    lo, hi = grid[0] / 2, 1 - (1 - grid[-1]) / 2
    out = np.full(q.shape[1], np.nan)
    for i in range(q.shape[1]):
        col = q[:, i]
        if np.isnan(col).any():
            continue
        col = np.maximum.accumulate(col)  # quantiles are non-decreasing; ties keep np.interp defined
        out[i] = 1.0 - np.interp(EXCEED, col, grid, left=lo, right=hi)
    return out


class FrequencyClassifier:
    """The training rows' share with delta > EXCEED in the query's (method, bits rounded,
    grouped) cell, falling back as :class:`~qbayes.evaluation.baselines.CellMedian` does to
    (bits, grouped), bits, then all rows when a cell has fewer than MIN_CELL rows."""

    name = "exceed_frequency"

    def fit(self, train: pl.DataFrame) -> FrequencyClassifier:
        self.train = CellMedian._cells(train).with_columns((pl.col("delta") > EXCEED).cast(pl.Float64).alias("_x"))
        return self

    def probability(self, test: pl.DataFrame) -> np.ndarray:
        test = CellMedian._cells(test)
        out = np.full(test.height, np.nan)
        for keys in CellMedian.LEVELS:
            todo = np.isnan(out)
            if not todo.any():
                break
            if not keys:
                out[todo] = self.train.get_column("_x").mean()
                break
            cells = (
                self.train.group_by(list(keys))
                .agg(pl.col("_x").mean().alias("_p"), pl.len().alias("_n"))
                .filter(pl.col("_n") >= MIN_CELL)
            )
            p = test.select(list(keys)).join(cells, on=list(keys), how="left", maintain_order="left")["_p"]
            out[todo] = p.cast(pl.Float64).fill_null(np.nan).to_numpy()[todo]
        return out


class ForestClassifier:
    """A random-forest classifier of delta > EXCEED on the random-forest baseline's features."""

    name = "exceed_forest"

    def __init__(self, seed: int = 0):
        self.features = RandomForest(seed=seed)
        self.seed = seed

    def fit(self, train: pl.DataFrame) -> ForestClassifier:
        from sklearn.ensemble import RandomForestClassifier

        f = self.features
        f.codes = {c: {v: i for i, v in enumerate(sorted(set(train.get_column(c))))} for c in ("method", "eval_set")}
        y = outcome(train.get_column("delta").to_numpy())
        self.constant = float(y[0]) if np.all(y == y[0]) else None  # one class: predict it
        if self.constant is None:
            self.rf = RandomForestClassifier(
                n_estimators=300, min_samples_leaf=2, random_state=self.seed, n_jobs=1
            ).fit(f._x(train), y)
        return self

    def probability(self, test: pl.DataFrame) -> np.ndarray:
        if self.constant is not None:
            return np.full(test.height, self.constant)
        proba = self.rf.predict_proba(self.features._x(test))
        return proba[:, list(self.rf.classes_).index(1.0)]


CLASSIFIERS: Registry[type] = Registry("classifier of delta > 1 nat")
for _classifier in (ForestClassifier, FrequencyClassifier):
    CLASSIFIERS.register(_classifier.name, _classifier)
