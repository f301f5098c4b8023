"""Posterior-predictive task accuracy of quantized configurations, in NumPy from the draws.

Each query row names a task and the unquantized model's accuracy on it (``fp16_acc``,
percent); its degradation draws come from the perplexity model's
:class:`~qbayes.model.predict.Predictor` for the same row. Draw s pairs the s-th Δ draw
with the s-th accuracy-model draw (the two posteriors are independent), so the predictive
carries both models' uncertainty and the task's measurement noise: what a re-measured score
of the quantized model would be.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.errors import QBayesError
from qbayes.model.accuracy import fitfile
from qbayes.model.accuracy.fitfile import AccuracyFit
from qbayes.model.accuracy.law import DELTA_FLOOR, TAU_NEW
from qbayes.model.tasks import Tasks
from qbayes.model.tasks import load as load_tasks

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ACC_COLUMNS = ("acc_q05", "acc_q25", "acc_q50", "acc_q75", "acc_q95", "acc_mean")
QUERY_COLUMNS = ("task", "fp16_acc")  # optional query columns that ask for accuracy


@dataclass(frozen=True)
class AccuracyDraws:
    """(S,) draws of the scalars and (T,) x S of the task terms, tasks in ``tasks`` order."""

    k: np.ndarray  # (T + 1, S): the last row a task the fit has not seen
    tau: np.ndarray  # (T + 1, S)
    alpha: np.ndarray
    eta: np.ndarray
    tasks: tuple[str, ...]

    @property
    def n(self) -> int:
        return self.alpha.shape[0]

    def index(self, task: str) -> int:
        return self.tasks.index(task) if task in self.tasks else len(self.tasks)


def draws_from_fit(fit: AccuracyFit, n: int, seed: int = 0) -> AccuracyDraws:
    """``n`` draws (with replacement where the fit has fewer), task terms of a task the
    fit has not seen drawn from their populations."""
    post = fit.posterior.stack(sample=("chain", "draw"))
    total = post.sizes["sample"]
    rng = np.random.default_rng(seed)
    take = rng.choice(total, size=n, replace=n > total)

    def flat(name):
        return np.asarray(post[name].values[..., take], dtype=np.float64)

    log_k_mu, sd_k = flat("log_k_mu"), flat("sd_k")
    new_k = np.exp(log_k_mu + sd_k * rng.standard_normal(n))
    new_tau = np.abs(TAU_NEW * rng.standard_normal(n))
    return AccuracyDraws(
        k=np.vstack([flat("k"), new_k]),
        tau=np.vstack([flat("tau"), new_tau]),
        alpha=flat("alpha"),
        eta=flat("eta"),
        tasks=fit.info.tasks,
    )


def check_queries(df: pl.DataFrame, tasks: Tasks, where: str = "queries") -> None:
    """Refuse, naming every problem with its rows: a task the table lacks (with close
    matches), ``fp16_acc`` missing, outside 0-100, or at or below the task's chance."""
    problems = []
    if "task" not in df.columns or "fp16_acc" not in df.columns:
        have = [c for c in QUERY_COLUMNS if c in df.columns]
        raise QBayesError(f"{where}: predicting accuracy needs both columns task and fp16_acc (given: {have})")
    acc = df.get_column("fp16_acc").cast(pl.Float64, strict=False)
    for i, (task, a, raw) in enumerate(zip(df["task"], acc, df["fp16_acc"])):
        row = f"row {i + 1}"
        if task is None:
            problems.append(f"{row}: task is empty")
            continue
        try:
            t = tasks.get(task, row)
        except QBayesError as exc:
            problems.append(str(exc))
            continue
        if a is None or np.isnan(a):
            problems.append(f"{row}: fp16_acc {raw!r} is not a number (percent)")
        elif not 0 <= a <= 100:
            problems.append(f"{row}: fp16_acc {a:g} is outside 0-100 (percent)")
        elif a <= t.chance:
            problems.append(
                f"{row}: fp16_acc {a:g} is at or below {task}'s chance level {t.chance:g}%: no accuracy to lose"
            )
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))


class AccuracyPredictor:
    """An accuracy fit ready to predict ``acc_*`` columns from Δ draws."""

    def __init__(self, fit: AccuracyFit, *, n_draws: int = 1000, seed: int = 0, tasks: Tasks | None = None):
        self.fit = fit
        self.tasks = tasks or load_tasks()
        self.seed = seed
        self.draws = draws_from_fit(fit, n_draws, seed)

    @classmethod
    def load(cls, path: str | os.PathLike, **kw) -> AccuracyPredictor:
        return cls(fitfile.load(path), **kw)

    def _law(self, delta: np.ndarray, task: list[str], fp16_acc) -> tuple[np.ndarray, ...]:
        """(retained, chance, fp16 accuracy, task index) for Δ draws ``delta`` (N, S'),
        each draw paired with an accuracy draw; S' may differ from the accuracy draws' S:
        Δ draws are reused cyclically."""
        d = self.draws
        cols = np.arange(d.n) % delta.shape[1]
        delta = np.maximum(delta[:, cols].astype(np.float64), 0.0) + DELTA_FLOOR
        ti = np.array([d.index(t) for t in task], dtype=np.int64)
        h = np.array([self.tasks.get(t).chance for t in task], dtype=np.float64)[:, None]
        f = np.asarray(fp16_acc, dtype=np.float64)[:, None]
        retained = np.exp(-d.k[ti] * delta ** d.alpha[None, :])
        return retained, h, f, ti

    def expected(self, delta: np.ndarray, task: list[str], fp16_acc) -> np.ndarray:
        """(N, S) expected accuracy (percent, no measurement noise) of each draw."""
        retained, h, f, _ = self._law(delta, task, fp16_acc)
        return h + (f - h) * retained

    def acc_draws(self, delta: np.ndarray, task: list[str], fp16_acc) -> np.ndarray:
        """(N, S) predictive accuracy draws (percent) of rows with Δ draws ``delta`` (N, S'),
        tasks ``task`` and unquantized accuracies ``fp16_acc``: the expected accuracy plus
        the task's binomial error, its excess noise and the spread of large drops."""
        d = self.draws
        retained, h, f, ti = self._law(delta, task, fp16_acc)
        se = np.array([self.tasks.get(t).binomial_se(a) for t, a in zip(task, f[:, 0])])[:, None]
        above = f - h
        mu = h + above * retained
        sd = np.sqrt(se**2 + d.tau[ti] ** 2 + (d.eta[None, :] * above * (1.0 - retained)) ** 2)
        rng = np.random.default_rng([self.seed, zlib.crc32(b"acc")])
        return np.clip(mu + sd * rng.standard_normal(mu.shape), 0.0, 100.0)

    def summarise(self, draws: np.ndarray) -> pl.DataFrame:
        """The :data:`ACC_COLUMNS` of (N, S) accuracy draws."""
        q = np.quantile(draws, QUANTILES, axis=1)
        cols = {name: q[i] for i, name in enumerate(ACC_COLUMNS[:-1])}
        cols["acc_mean"] = draws.mean(axis=1)
        return pl.DataFrame(cols)
