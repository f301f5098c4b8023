"""Numbers behind the decision section: queries for the real models of one family of the
data (the one with the most rows, or the one the user names), with one method and
evaluation set; their predicted perplexity; the size–precision frontier under memory
budgets. Weight memory in GB = params (billions) × effective bits / 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.errors import QBayesError, suggest
from qbayes.model.choose import (
    DEFAULT_TOLERANCE,
    FP16_BITS,
    best_under_budget,
    compare_to,
    mean_ppl_draws,
    memory_gb,
    predictive_ppl_draws,
)
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table
from qbayes.names import key

MAX_CURVES = 3  # model sizes drawn as curves: the smallest, a middle one, the largest
CURVE_BITS = tuple(np.round(np.arange(2.0, 8.01, 0.25), 2))
TABLE_BITS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
FRONTIER_BITS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
BUDGETS_GB = (2.0, 4.0, 8.0, 16.0, 24.0, 48.0, 80.0, 160.0)
GROUP = 128


@dataclass(frozen=True)
class Scenario:
    family: str
    method: str
    eval_set: str
    train_tokens_b: float | None
    ppl_a: float  # ln fp16 ppl = ppl_a + ppl_b * ln(params_b)
    ppl_b: float
    ppl_basis: str
    # the family's models on the evaluation set: their sizes and measured fp16 perplexity,
    # and the one with the most rows (the model of the summary)
    measured: dict[float, float]
    model: str
    model_params: float

    @property
    def frontier_sizes(self) -> tuple[float, ...]:
        return tuple(sorted(self.measured))

    @property
    def sizes(self) -> tuple[float, ...]:
        """At most MAX_CURVES of the family's sizes: the smallest, a middle one, the largest."""
        s = self.frontier_sizes
        return s if len(s) <= MAX_CURVES else (s[0], s[len(s) // 2], s[-1])

    def fp16_ppl(self, params_b) -> np.ndarray:
        """The measured fp16 perplexity of a size the family has, else the trend's."""
        x = np.asarray(params_b, dtype=float)
        trend = np.exp(self.ppl_a + self.ppl_b * np.log(x))
        return np.vectorize(lambda p, t: self.measured.get(float(p), t), otypes=[float])(x, trend)


def _most_rows(df: pl.DataFrame, col: str) -> str:
    vc = df.get_column(col).drop_nulls().value_counts().sort(["count", col], descending=[True, False])
    return vc[col][0]


def scenario(fit: Fit, family: str | None = None) -> Scenario:
    """``family`` (a family of the fit's data; default the one with the most rows), GPTQ
    (else the commonest method), wikitext2 (else the commonest evaluation set); the
    family's models with their measured fp16 perplexity, and for other sizes a fit of ln
    ppl against ln params."""
    df = fit.data
    families = sorted(set(df.get_column("family").drop_nulls().to_list()))
    if family is None:
        family = _most_rows(df, "family")
    elif family not in families:
        same = [f for f in families if key(f) == key(family)]
        if not same:
            raise QBayesError(
                f"--scenario '{family}' is not a family of the fit's data{suggest(family, families, key=key)}; "
                f"its families: {', '.join(families)}"
            )
        family = same[0]
    methods = set(fit.encoding.levels.get("method", ()))
    method = "GPTQ" if "GPTQ" in methods else _most_rows(df, "method")
    evals = set(fit.encoding.levels.get("eval_set", ()))
    eval_set = "wikitext2" if "wikitext2" in evals else _most_rows(df, "eval_set")
    fam = df.filter(pl.col("family") == family)
    tokens = fam.get_column("train_tokens_b").drop_nulls()
    train_tokens = float(tokens.median()) if tokens.len() else None
    base = (
        df.filter(pl.col("eval_set") == eval_set)
        .select("family", "model", "params_b", "fp16_ppl")
        .unique(["model"])
        .drop_nulls()
    )
    own = base.filter(pl.col("family") == family)
    if own.height == 0:  # the family was not measured on that evaluation set: its own models on any
        own = df.filter(pl.col("family") == family).select("family", "model", "params_b", "fp16_ppl").drop_nulls()
    by_size = own.group_by("params_b").agg(pl.col("fp16_ppl").median()).sort("params_b")
    measured = dict(zip(by_size["params_b"].to_list(), by_size["fp16_ppl"].to_list()))
    fam_rows = df.filter(pl.col("family") == family)
    model = _most_rows(fam_rows, "model")
    model_params = float(fam_rows.filter(pl.col("model") == model)["params_b"][0])
    measured.setdefault(model_params, float(fam_rows.filter(pl.col("model") == model)["fp16_ppl"].median()))
    if own.get_column("params_b").n_unique() >= 2:
        pts, basis = own, f"{family} models on {eval_set}"
    elif base.get_column("params_b").n_unique() >= 2:
        pts, basis = base, f"all families' models on {eval_set}"
    else:
        pts, basis = None, "the median fp16 perplexity (too few sizes to fit a trend)"
    if pts is None:
        a, b = math.log(float(df.get_column("fp16_ppl").median())), 0.0
    else:
        x = np.log(pts.get_column("params_b").to_numpy())
        y = np.log(pts.get_column("fp16_ppl").to_numpy())
        b, a = np.polyfit(x, y, 1)
        basis += f" ({pts.height} models)"
    return Scenario(family, method, eval_set, train_tokens, float(a), float(b), basis, measured, model, model_params)


def queries(sc: Scenario, sizes, bits) -> pl.DataFrame:
    """A standard table (through :func:`query_table`) for every size × weight bits."""
    grid = [(p, w) for p in sizes for w in bits]
    p = np.array([g[0] for g in grid])
    return query_table(
        pl.DataFrame(
            {
                "family": [sc.family] * len(grid),
                "model": [f"{sc.family} {x:g}B" for x in p],
                "params_b": p,
                "train_tokens_b": [sc.train_tokens_b] * len(grid),
                "method": [sc.method] * len(grid),
                "w_bits": [g[1] for g in grid],
                "group_size": [GROUP] * len(grid),
                "eval_set": [sc.eval_set] * len(grid),
                "fp16_ppl": sc.fp16_ppl(p),
            },
            schema_overrides={"train_tokens_b": pl.Float64},
        ),
        where="report scenario",
    )


def curves(predictor: Predictor, sc: Scenario) -> pl.DataFrame:
    """Predicted perplexity quantiles along ``CURVE_BITS`` (plus ``TABLE_BITS``) for the scenario's sizes."""
    bits = sorted(set(CURVE_BITS) | set(TABLE_BITS))
    with np.errstate(over="ignore", invalid="ignore"):
        return predictor.predict(queries(sc, sc.sizes, bits))


@dataclass
class Frontier:
    options: pl.DataFrame  # one row per (size, bits), fp16 included: memory, ppl quantiles
    # one row per budget: the best option, its runner-up, P(best), and the probability that
    # the runner-up's perplexity as one would measure it is within DEFAULT_TOLERANCE of the best's
    choices: pl.DataFrame


def frontier(predictor: Predictor, sc: Scenario) -> Frontier:
    sizes = sc.frontier_sizes
    rows = predictor.prepare(queries(sc, sizes, FRONTIER_BITS))
    with np.errstate(over="ignore", invalid="ignore"):
        pred = predictor.predict(rows)
    ppl_draws = mean_ppl_draws(predictor, rows)
    measured = predictive_ppl_draws(predictor, rows)
    opts = pred.select(
        "params_b", "w_bits", "bits", "ppl_q05", "ppl_q50", "ppl_q95", "fp16_ppl", pl.lit(False).alias("fp16")
    )
    fp = pl.DataFrame({"params_b": list(sizes), "w_bits": FP16_BITS, "bits": FP16_BITS})
    fp = fp.with_columns(pl.Series("fp16_ppl", sc.fp16_ppl(sizes)))
    fp = fp.with_columns(
        pl.col("fp16_ppl").alias("ppl_q05"),
        pl.col("fp16_ppl").alias("ppl_q50"),
        pl.col("fp16_ppl").alias("ppl_q95"),
        pl.lit(True).alias("fp16"),
    )
    options = pl.concat([opts, fp.select(opts.columns)], how="vertical_relaxed")
    mem = memory_gb(options)
    options = options.with_columns(pl.Series("memory_gb", mem))
    fp_draws = np.broadcast_to(sc.fp16_ppl(sizes)[None, :], (ppl_draws.shape[0], len(sizes)))
    all_draws = np.concatenate([ppl_draws, fp_draws], axis=1)
    all_measured = np.concatenate([measured, fp_draws], axis=1)
    med = options.get_column("ppl_q50").to_numpy()
    rows = []
    for budget in BUDGETS_GB:
        order, p_best = best_under_budget(mem, med, all_draws, budget)
        rows.append(
            {
                "budget_gb": budget,
                "best": int(order[0]) if order.size else None,
                "runner_up": int(order[1]) if order.size > 1 else None,
                "p_best": float(p_best[0]) if order.size else math.nan,
                "p_runner_up_within": float(compare_to(all_measured[:, order[:2]], 0, DEFAULT_TOLERANCE)[1, 0])
                if order.size > 1
                else math.nan,
            }
        )
    return Frontier(
        options,
        pl.DataFrame(
            rows,
            schema={
                "budget_gb": pl.Float64,
                "best": pl.Int64,
                "runner_up": pl.Int64,
                "p_best": pl.Float64,
                "p_runner_up_within": pl.Float64,
            },
        ),
    )


def pareto(options: pl.DataFrame) -> pl.DataFrame:
    """Options that no other option beats on both memory and median perplexity."""
    o = options.sort(["memory_gb", "ppl_q50"])
    keep, best = [], math.inf
    for i, v in enumerate(o.get_column("ppl_q50").to_list()):
        if v < best:
            keep.append(i)
            best = v
    return o[keep]
