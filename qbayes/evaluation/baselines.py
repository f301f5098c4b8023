"""Baselines that ``qbayes validate`` compares the Bayesian models against.

Each is a small class with ``fit(train)`` and ``quantiles(test, qs) -> (len(qs), N)``
over degradation delta, so every model is scored by the same code:

* ``cell_median``: median (and empirical quantiles) of delta per (method, bits, grouped)
  cell, falling back to (bits, grouped), then bits, then everything when a cell is small;
* ``scaling_law_ls``: the closed-form law ln delta = c + gD ln D - gN ln N - bits / gamma
  fitted by least squares on ln(delta + 0.01), with residual quantiles;
* ``random_forest``: a random forest on the same features as the Bayesian model (the
  approach of arXiv 2410.12119), with out-of-bag residual quantiles.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from qbayes.model.mean import log_target
from qbayes.model.spec import LOG_SHIFT
from qbayes.registry import Registry

MIN_CELL = 5


def _log_target(df: pl.DataFrame) -> np.ndarray:
    return log_target(df.get_column("delta").to_numpy())


def _from_log(y: np.ndarray) -> np.ndarray:
    return np.exp(y) - LOG_SHIFT


class CellMedian:
    name = "cell_median"
    LEVELS = (("method", "bits_r", "grouped"), ("bits_r", "grouped"), ("bits_r",), ())

    @staticmethod
    def _cells(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.col("bits").round(0).alias("bits_r"), pl.col("group_size").is_not_null().alias("grouped")
        )

    def fit(self, train: pl.DataFrame) -> CellMedian:
        self.train = self._cells(train)
        return self

    def quantiles(self, test: pl.DataFrame, qs) -> np.ndarray:
        test = self._cells(test)
        out = np.full((len(qs), test.height), np.nan)
        todo = np.ones(test.height, dtype=bool)
        for keys in self.LEVELS:
            if keys:
                groups = self.train.group_by(list(keys)).agg(pl.col("delta"))
                groups = groups.filter(pl.col("delta").list.len() >= MIN_CELL)
                joined = test.select(list(keys)).join(groups, on=list(keys), how="left", maintain_order="left")
                lists = joined.get_column("delta").to_list()
            else:
                lists = [self.train.get_column("delta").to_list()] * test.height
            for i in np.flatnonzero(todo):
                if lists[i] is not None:
                    out[:, i] = np.quantile(lists[i], qs)
                    todo[i] = False
        return out


class ScalingLawLS:
    name = "scaling_law_ls"

    @staticmethod
    def _x(df: pl.DataFrame, log_d_fill: float) -> np.ndarray:
        log_d = np.log(df.get_column("train_tokens_b").cast(pl.Float64).fill_null(np.exp(log_d_fill)).to_numpy())
        return np.column_stack(
            [np.ones(df.height), log_d, np.log(df.get_column("params_b").to_numpy()), df.get_column("bits").to_numpy()]
        )

    def fit(self, train: pl.DataFrame) -> ScalingLawLS:
        tokens = train.get_column("train_tokens_b").drop_nulls().to_numpy()
        self.log_d_fill = float(np.median(np.log(tokens))) if tokens.size else 0.0
        y = _log_target(train)
        x = self._x(train, self.log_d_fill)
        self.coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        self.resid = y - x @ self.coef
        return self

    def quantiles(self, test: pl.DataFrame, qs) -> np.ndarray:
        mean = self._x(test, self.log_d_fill) @ self.coef
        return _from_log(mean[None, :] + np.quantile(self.resid, qs)[:, None])


class RandomForest:
    name = "random_forest"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _x(self, df: pl.DataFrame) -> np.ndarray:
        tokens = df.get_column("train_tokens_b").cast(pl.Float64).to_numpy()
        group = df.get_column("group_size").cast(pl.Float64).to_numpy()
        cats = [
            np.array([self.codes[c].get(v, -1) for v in df.get_column(c).to_list()]) for c in ("method", "eval_set")
        ]
        return np.column_stack(
            [
                np.log(df.get_column("params_b").to_numpy()),
                np.where(np.isnan(tokens), -1.0, np.log(tokens)),
                df.get_column("bits").to_numpy(),
                np.isnan(group),
                np.where(np.isnan(group), 0, np.log2(np.nan_to_num(group, nan=1))),
                df.get_column("act_bits").to_numpy(),
                *cats,
            ]
        )

    def fit(self, train: pl.DataFrame) -> RandomForest:
        from sklearn.ensemble import RandomForestRegressor

        self.codes = {c: {v: i for i, v in enumerate(sorted(set(train.get_column(c))))} for c in ("method", "eval_set")}
        y = _log_target(train)
        self.rf = RandomForestRegressor(
            n_estimators=300, min_samples_leaf=2, oob_score=True, random_state=self.seed, n_jobs=1
        ).fit(self._x(train), y)
        self.resid = y - self.rf.oob_prediction_
        return self

    def quantiles(self, test: pl.DataFrame, qs) -> np.ndarray:
        mean = self.rf.predict(self._x(test))
        return _from_log(mean[None, :] + np.quantile(self.resid, qs)[:, None])


BASELINES: Registry[type] = Registry("baseline")
for _baseline in (CellMedian, ScalingLawLS, RandomForest):
    BASELINES.register(_baseline.name, _baseline)
