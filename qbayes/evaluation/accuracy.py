"""Cross-validation of the accuracy model over families (``qbayes validate --target accuracy``).

Each fold fits the accuracy model to the other families' task accuracies and predicts the
held-out family's twice: ``bayes`` from the perplexity model's Δ draws for its
configurations (what ``qbayes predict`` does for a user who measured nothing), and
``bayes_known_delta`` from the Δ measured for the configuration where it is known (printed
by the source, or measured by another study in the perplexity database; the perplexity
model's draws elsewhere), which scores the link from Δ to accuracy apart from errors of
the perplexity model. The perplexity fit is the one given (the shipped one by default), so
the held-out family's perplexity rows, where it has any, shaped its Δ draws. Scores are in
accuracy points, per task and overall, on the quantile grid of
:mod:`qbayes.evaluation.crossval`, against baselines fitted on the same folds:

* ``no_change``: the quantized model scores what the unquantized one does;
* ``cell_median``: the training families' median drop in points per (task, method, bits,
  group size), falling back to (task, bits) and then to the task; its quantiles are the
  drops' spread in that cell;
* ``linear_delta``: per task, a least-squares line of the drop on the median predicted Δ,
  with normal residuals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.db.database import Database
from qbayes.evaluation.crossval import QGRID, Fold, scores
from qbayes.evaluation.summary import Scores
from qbayes.model.accuracy.fit import AccuracyFitOptions, fit_rows
from qbayes.model.accuracy.predict import AccuracyPredictor
from qbayes.model.accuracy.rows import AccuracyRows, build, delta_queries, fp16_wikitext2
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor
from qbayes.model.tasks import Tasks

MODELS = ("bayes", "bayes_known_delta", "no_change", "cell_median", "linear_delta")
CELL_LEVELS = (("task", "method", "w_bits", "group_size"), ("task", "w_bits"), ("task",))
MIN_CELL = 3  # rows a cell needs before its spread is used


@dataclass
class AccuracyFoldResult:
    family: str
    model: str
    rows: pl.DataFrame  # held-out rows: task, acc
    q: np.ndarray  # (len(QGRID), N)
    convergence: str = ""


@dataclass(frozen=True)
class TaskScores:
    task: str  # "overall" for all rows
    model: str
    scores: Scores


@dataclass
class AccuracyValidation:
    scheme: str
    folds: dict[str, tuple[str, ...]]
    per_task: list[TaskScores] = field(default_factory=list)
    per_family: list[TaskScores] = field(default_factory=list)  # task holds the family here
    convergence: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        def rec(s: TaskScores, key: str) -> dict:
            return {key: s.task, "model": s.model, **{k: getattr(s.scores, k) for k in ("n", "mdae", "cov90", "crps")}}

        return {
            "target": "accuracy (points)",
            "scheme": self.scheme,
            "folds": {k: list(v) for k, v in self.folds.items()},
            "per_task": [rec(s, "task") for s in self.per_task],
            "per_family": [rec(s, "family") for s in self.per_family],
            "convergence": self.convergence,
        }


def subset(data: AccuracyRows, families) -> AccuracyRows:
    """The rows of ``families`` with their configurations renumbered from 0."""
    rows = data.rows.filter(pl.col("family").is_in(list(families)))
    keep = sorted(set(rows["config"]))
    renumber = {old: new for new, old in enumerate(keep)}
    configs = data.configs.filter(pl.col("config").is_in(keep)).with_columns(
        pl.col("config").replace_strict(renumber, return_dtype=pl.Int64)
    )
    rows = rows.with_columns(pl.col("config").replace_strict(renumber, return_dtype=pl.Int64))
    return AccuracyRows(rows=rows, configs=configs.sort("config"), shift=data.shift)


def _with_config(data: AccuracyRows) -> pl.DataFrame:
    cols = ("config", "method", "w_bits", "group_size")
    return data.rows.join(data.configs.select(cols), on="config").with_columns(
        (pl.col("acc") - pl.col("fp16_acc")).alias("drop")
    )


def no_change(test: pl.DataFrame) -> np.ndarray:
    return np.broadcast_to(test["fp16_acc"].to_numpy(), (len(QGRID), test.height)).copy()


def cell_median(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
    """Quantiles of the training drops in each held-out row's cell, most specific first."""
    q = np.full((len(QGRID), test.height), np.nan)
    for level in CELL_LEVELS:
        cells = train.group_by(list(level)).agg(pl.col("drop"))
        cells = cells.filter(pl.col("drop").list.len() >= MIN_CELL)
        joined = test.select(list(level)).join(
            cells, on=list(level), how="left", nulls_equal=True, maintain_order="left"
        )
        for i, drops in enumerate(joined["drop"].to_list()):
            if drops is not None and np.isnan(q[0, i]):
                q[:, i] = np.quantile(drops, QGRID)
    return q + test["fp16_acc"].to_numpy()[None, :]


def linear_delta(train: pl.DataFrame, test: pl.DataFrame, z: np.ndarray) -> np.ndarray:
    """Per task: drop = a + b * Δ by least squares, normal residuals (``z``: normal quantiles)."""
    q = np.full((len(QGRID), test.height), np.nan)
    for task in set(test["task"]):
        tr = train.filter(pl.col("task") == task)
        idx = np.flatnonzero((test["task"] == task).to_numpy())
        if tr.height < 3:
            continue
        x = np.column_stack([np.ones(tr.height), tr["delta_median"].to_numpy()])
        coef, *_ = np.linalg.lstsq(x, tr["drop"].to_numpy(), rcond=None)
        sd = float(np.std(tr["drop"].to_numpy() - x @ coef, ddof=2))
        mean = coef[0] + coef[1] * test["delta_median"].to_numpy()[idx] + test["fp16_acc"].to_numpy()[idx]
        q[:, idx] = mean[None, :] + sd * z[:, None]
    return q


def known_delta_draws(data: AccuracyRows, model_draws: np.ndarray, *, seed: int) -> np.ndarray:
    """(C, S) Δ draws: from the configuration's known Δ (printed, or measured in the
    database; normal on ln(Δ + shift)) where it has one, else ``model_draws``."""
    c = data.configs
    known = (c["delta_from"] != "model").to_numpy()
    z = np.random.default_rng(seed).standard_normal(model_draws.shape)
    loc = c["log_delta_loc"].to_numpy()[:, None]
    scale = c["log_delta_scale"].to_numpy()[:, None]
    return np.where(known[:, None], np.exp(loc + scale * z) - data.shift, model_draws)


def run(
    db: Database,
    tasks: Tasks,
    ppl_fit: Fit,
    ppl_fit_path: str,
    folds: list[Fold],
    opts: AccuracyFitOptions,
    *,
    n_draws: int = 1000,
    progress: Callable[[str], None] = lambda m: None,
) -> list[AccuracyFoldResult]:
    """Fit and score every fold; the baselines on the same folds."""
    from scipy.stats import norm

    predictor = Predictor(ppl_fit, n_draws=n_draws, seed=opts.sample.seed)
    data = build(db, tasks, predictor)
    delta = predictor.delta(predictor.prepare(delta_queries(data.configs, fp16_wikitext2(db))))  # (C, S)
    known = known_delta_draws(data, delta, seed=opts.sample.seed)
    medians = np.median(delta, axis=1)
    table = _with_config(data).with_columns(pl.Series("delta_median", medians[data.rows["config"].to_numpy()]))
    z = norm.ppf(QGRID)
    out = []
    for fold in folds:
        progress(f"fold {fold.family}: fitting on {', '.join(fold.train)}")
        train_rows = subset(data, fold.train)
        fit = fit_rows(train_rows, tasks, ppl_fit, ppl_fit_path, opts)
        acc = AccuracyPredictor(fit, n_draws=n_draws, seed=opts.sample.seed, tasks=tasks)
        test = table.filter(pl.col("family") == fold.family)
        train = table.filter(pl.col("family").is_in(list(fold.train)))
        held = test.select("task", "acc", "fp16_acc", "config")
        conv = fit.info.convergence.line()
        for name, d in (("bayes", delta), ("bayes_known_delta", known)):
            draws = acc.acc_draws(d[test["config"].to_numpy()], test["task"].to_list(), test["fp16_acc"].to_numpy())
            out.append(AccuracyFoldResult(fold.family, name, held, np.quantile(draws, QGRID, axis=1), conv))
        out.append(AccuracyFoldResult(fold.family, "no_change", held, no_change(test)))
        out.append(AccuracyFoldResult(fold.family, "cell_median", held, cell_median(train, test)))
        out.append(AccuracyFoldResult(fold.family, "linear_delta", held, linear_delta(train, test, z)))
    return out


def summarise(results: list[AccuracyFoldResult], scheme: str, folds: list[Fold]) -> AccuracyValidation:
    """Scores per task and overall, and per held-out family, for every model."""
    v = AccuracyValidation(scheme=scheme, folds={f.family: f.train for f in folds})
    v.convergence = {r.family: r.convergence for r in results if r.model == "bayes"}
    for model in MODELS:
        rs = [r for r in results if r.model == model]
        if not rs:
            continue
        y = np.concatenate([r.rows["acc"].to_numpy() for r in rs])
        q = np.concatenate([r.q for r in rs], axis=1)
        task = np.concatenate([r.rows["task"].to_numpy() for r in rs])
        v.per_task.append(TaskScores("overall", model, scores(y, q)))
        for t in sorted(set(task)):
            m = task == t
            v.per_task.append(TaskScores(t, model, scores(y[m], q[:, m])))
        for r in rs:
            v.per_family.append(TaskScores(r.family, model, scores(r.rows["acc"].to_numpy(), r.q)))
    return v
