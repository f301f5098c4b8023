"""Choosing a model size, weight format and method under a memory budget.

The options are every candidate model crossed with every method, weight bits and group
size asked for and with every named format (qbayes.db.named_formats: Q4_K_M, nf4, int4-g128,
...), plus each candidate unquantized. An option's weight memory is params x bits per
weight / 8 GB (a named format's bits per weight from data/formats.csv; otherwise effective
bits, which count the group scales and zeros, table.effective_bits; fp16 is 16 bits). Its
memory is that plus a fixed overhead and, given a context length, the candidate's fp16 KV
cache (kv_cache). Among the options within the budget the best has
the lowest posterior median perplexity. ``p_best`` is the share of posterior draws in
which an option has the lowest mean perplexity of all options within the budget: the mean
degradation, without observation noise, which is independent per row and would blur a
comparison the posterior does settle.

With a model that has a collapse regime (spec ``[collapse]``), each option also has
``p_collapse``, its probability of collapsing. The ranking accounts for it twice: the
predictive median perplexity is the mixture's (an option more likely than not to collapse
has its median in the collapse), and ``p_best`` compares per draw the mixture's mean
degradation, (1 - p) * law mean + p * collapse level, so an option with a 20% chance of
collapsing to 10 nats carries 2 nats of expected degradation in every draw and rarely wins.

``p_best`` answers a question nobody asks: options of one method come out ordered by bits
per weight whatever the data, because their means move together. What a user reads is
whether the difference matters: ``p_within_tolerance`` is the probability that an option's
perplexity, as one would measure it (observation noise included, independently per
option), is within ``tolerance`` (relative) of the best option's, and ``diff_q05``,
``diff_q50``, ``diff_q95`` the quantiles of the difference in perplexity to the best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.db.named_formats import COLUMN as FORMAT
from qbayes.db.named_formats import DEFAULT_METHOD, NamedFormat, table_names
from qbayes.errors import QBayesError
from qbayes.model.conditioning import Conditioned, Observed, condition
from qbayes.model.kv_cache import kv_cache_gb
from qbayes.model.predict import NEW_LEVEL_FLAGS, PROVENANCE, Predictor, Prepared
from qbayes.model.queries import query_table

FP16_BITS = 16.0
DEFAULT_TOLERANCE = 0.01  # relative perplexity difference a user does not care about
# what choose adds to compare the options within the budget with the best of them
COMPARISON = ("p_within_tolerance", "diff_q05", "diff_q50", "diff_q95")
CANDIDATE_COLUMNS = ("family", "model", "params_b", "fp16_ppl")  # required; also train_tokens_b, arch, eval_set
# of Predictor.predict's flags, those an option can raise (its kind comes from the format)
FLAGS = tuple(NEW_LEVEL_FLAGS[g] for g in ("family", "arch", "method", "eval_set", "format"))


def options(
    candidates: pl.DataFrame,
    *,
    methods: Sequence[str] = (),
    w_bits: Sequence[float] = (),
    group_sizes: Sequence[int | None] = (),
    formats: Sequence[NamedFormat] = (),
    eval_set: str = "wikitext2",
) -> pl.DataFrame:
    """The quantized options as a standard query table (query_table) with the ``format``
    of each as the user named it (a label too; null for the grid's): candidates in order,
    then methods x bits x group sizes (where bits and group sizes are given), then the
    named formats. A format that fixes its method (Q4_K_M) is one option; a label
    (int4-g128) is one per method, RTN without any.
    ``candidates`` has a row per model with at least CANDIDATE_COLUMNS; a candidate without
    ``eval_set`` is evaluated on ``eval_set``."""
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise QBayesError(
            f"candidates: missing column(s) {', '.join(missing)}; "
            f"need {', '.join(CANDIDATE_COLUMNS)} (optional: train_tokens_b, arch, eval_set)"
        )
    clash = [c for c in ("method", "w_bits", "group_size", FORMAT) if c in candidates.columns]
    if clash:
        raise QBayesError(
            f"candidates: column(s) {', '.join(clash)} belong to the options, not the candidate "
            "models; give them with --format, or --method, --w-bits and --group-size"
        )
    grid_on = bool(w_bits or group_sizes)
    if grid_on and not (methods and w_bits and group_sizes):
        raise QBayesError("choose needs at least one method, one weight bit-width and one group size")
    if not (grid_on or formats):
        raise QBayesError("choose needs formats, or methods x weight bit-widths x group sizes")
    if "eval_set" not in candidates.columns:
        candidates = candidates.with_columns(pl.lit(eval_set).alias("eval_set"))
    rows = [(None, m, float(b), g) for m in methods for b in w_bits for g in group_sizes] if grid_on else []
    rows += [(f.name, m, None, None) for f in formats for m in ([None] if f.method else (methods or [DEFAULT_METHOD]))]
    grid = pl.DataFrame(
        rows,
        schema={FORMAT: pl.String, "method": pl.String, "w_bits": pl.Float64, "group_size": pl.Int64},
        orient="row",
    )
    crossed = candidates.join(grid, how="cross")
    return query_table(crossed, where="candidates").with_columns(crossed.get_column(FORMAT))


def memory_gb(table: pl.DataFrame) -> np.ndarray:
    """Weight memory in GB: params (billions) x bits per weight / 8."""
    return table.get_column("params_b").to_numpy() * table.get_column("bits").to_numpy() / 8


def mean_ppl_draws(predictor: Predictor, rows: Prepared) -> np.ndarray:
    """(S, N) perplexity from the mean degradation of each posterior draw (no observation
    noise); for a model with a collapse regime, the mixture's mean degradation, so that an
    option likely to collapse in a draw is as bad as that draw says (Predictor.expected)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = predictor.expected(rows)
        fp16 = rows.query.get_column("fp16_ppl").to_numpy()
        return np.exp(np.nan_to_num(mean.T.astype(np.float64), nan=np.inf, posinf=50.0)) * fp16[None, :]


def best_under_budget(
    memory: np.ndarray, median: np.ndarray, ppl_draws: np.ndarray, budget_gb: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the options within ``budget_gb`` sorted by median perplexity (ties: less
    memory first), and for each the share of draws in which it is the best of them."""
    ok = np.flatnonzero(memory <= budget_gb)
    if ok.size == 0:
        return ok, np.zeros(0)
    order = ok[np.lexsort((memory[ok], median[ok]))]
    winners = ok[np.argmin(ppl_draws[:, ok], axis=1)]
    p_best = np.array([np.mean(winners == i) for i in order])
    return order, p_best


def predictive_ppl_draws(predictor: Predictor, rows: Prepared) -> np.ndarray:
    """(S, N) perplexity as one would measure it: posterior-predictive degradation with
    observation noise drawn independently per row."""
    with np.errstate(over="ignore", invalid="ignore"):
        delta = predictor.delta(rows, independent_noise=True)
        fp16 = rows.query.get_column("fp16_ppl").to_numpy()
        return np.exp(delta.T.astype(np.float64)) * fp16[None, :]


def compare_to(ppl_draws: np.ndarray, best: int, tolerance: float) -> np.ndarray:
    """For every option (columns of ``ppl_draws``, (S, N)), against option ``best``: the
    share of draws in which its perplexity is at most (1 + ``tolerance``) times the best's,
    and the 5%, 50% and 95% quantiles of the difference; (N, 4). The best against itself
    is 1 and 0, 0, 0: a user compares the others to it."""
    other = ppl_draws[:, best : best + 1]
    within = np.mean(ppl_draws <= other * (1.0 + tolerance), axis=0)
    diff = np.quantile(ppl_draws - other, [0.05, 0.5, 0.95], axis=0).T
    out = np.column_stack([within, diff])
    out[best] = (1.0, 0.0, 0.0, 0.0)
    return out


def extra_memory_gb(candidates: pl.DataFrame, *, overhead_gb: float = 0.0, context: int | None = None) -> pl.DataFrame:
    """Per candidate (family, model, params_b): ``overhead_gb`` and, given ``context``, its
    fp16 KV cache of that many tokens (kv_cache; null without a context)."""
    if not overhead_gb >= 0:
        raise QBayesError(f"the memory overhead must be >= 0 GB, got {overhead_gb:g}")
    cands = candidates.select("family", "model", "params_b").unique(maintain_order=True)
    kv = kv_cache_gb(cands, context) if context is not None else [None] * cands.height
    return cands.with_columns(
        pl.Series("kv_cache_gb", kv, dtype=pl.Float64), pl.lit(float(overhead_gb)).alias("overhead_gb")
    )


@dataclass(frozen=True)
class Scored:
    """Every option (``table``: query columns, predicted perplexity quantiles, flags,
    provenance, ``weights_gb``, ``kv_cache_gb``, ``overhead_gb``, ``memory_gb``) with its
    perplexity draws, (S, N) in the table's order: ``mean`` from the mean degradation,
    ``measured`` with observation noise (:func:`predictive_ppl_draws`). fp16 options are
    measured, not predicted: their draws are their fp16 perplexity."""

    table: pl.DataFrame
    mean: np.ndarray
    measured: np.ndarray


def scored_options(
    predictor: Predictor,
    candidates: pl.DataFrame,
    *,
    methods: Sequence[str] = (),
    w_bits: Sequence[float] = (),
    group_sizes: Sequence[int | None] = (),
    formats: Sequence[NamedFormat] = (),
    eval_set: str = "wikitext2",
    include_fp16: bool = True,
    overhead_gb: float = 0.0,
    context: int | None = None,
    observed: Observed | None = None,
    on_conditioned: Callable[[Conditioned], None] = lambda c: None,
) -> Scored:
    """The options (:func:`options`, plus each candidate in fp16), predicted, with their memory.
    With ``observed`` rows the predictions condition on them (conditioning.condition, which
    ``on_conditioned`` is shown) and the table gains its ``obs_*`` columns."""
    q = options(candidates, methods=methods, w_bits=w_bits, group_sizes=group_sizes, formats=formats, eval_set=eval_set)
    extra = extra_memory_gb(q, overhead_gb=overhead_gb, context=context)  # before the predictions: may refuse
    # the model reads a format by its name in the table; a label (int4-g128) names none
    modelled = q.with_columns(table_names(q.get_column(FORMAT)).alias(FORMAT))
    if observed is None:
        rows = predictor.prepare(modelled)
    else:
        cond = condition(predictor, observed, modelled)
        predictor, rows = cond.predictor, cond.rows
        on_conditioned(cond)
    with np.errstate(over="ignore", invalid="ignore"):
        pred = predictor.predict(rows)
    quant = pl.concat(
        [
            q.select(
                "family",
                "model",
                "params_b",
                FORMAT,
                "method",
                "w_bits",
                "group_size",
                "w_kind",
                "bits",
                "eval_set",
                "fp16_ppl",
            ),
            pred.select("ppl_q05", "ppl_q50", "ppl_q95", "p_collapse", *FLAGS, *PROVENANCE),
            *(() if observed is None else (cond.columns(q),)),
        ],
        how="horizontal",
    )
    ppl = mean_ppl_draws(predictor, rows)
    measured = predictive_ppl_draws(predictor, rows)
    table = quant
    if include_fp16:
        base = quant.unique(["model", "eval_set"], keep="first", maintain_order=True)
        fp = base.with_columns(
            pl.lit(None, pl.String).alias(FORMAT),
            pl.lit("fp16").alias("method"),
            pl.lit(FP16_BITS).alias("w_bits"),
            pl.lit("float").alias("w_kind"),
            pl.lit(None, pl.Int64).alias("group_size"),
            pl.lit(FP16_BITS).alias("bits"),
            *(pl.col("fp16_ppl").alias(c) for c in ("ppl_q05", "ppl_q50", "ppl_q95")),
            pl.lit(None, pl.Float64).alias("p_collapse"),  # not a quantized option
            *(pl.lit(False).alias(c) for c in FLAGS),
        )  # fp16 is measured, not predicted
        table = pl.concat([quant, fp], how="vertical_relaxed")
        fp16 = np.broadcast_to(fp.get_column("fp16_ppl").to_numpy()[None, :], (ppl.shape[0], fp.height))
        ppl = np.concatenate([ppl, fp16], axis=1)
        measured = np.concatenate([measured, fp16], axis=1)
    weights = memory_gb(table)
    table = table.join(extra, on=["family", "model", "params_b"], how="left", maintain_order="left")
    mem = weights + table.select(pl.col("kv_cache_gb").fill_null(0.0) + pl.col("overhead_gb")).to_series().to_numpy()
    table = table.with_columns(pl.Series("weights_gb", weights), pl.Series("memory_gb", mem))
    return Scored(table=table, mean=ppl, measured=measured)


def choose(
    predictor: Predictor,
    candidates: pl.DataFrame,
    *,
    budget_gb: float,
    tolerance: float = DEFAULT_TOLERANCE,
    **grid,
) -> pl.DataFrame:
    """Every option of :func:`scored_options` (``grid``: its keyword arguments) and for
    those within the budget their rank (1 = best), ``p_best`` and :data:`COMPARISON`
    against the best; sorted by rank, then the options over budget by memory."""
    if not budget_gb > 0:
        raise QBayesError(f"the memory budget must be > 0 GB, got {budget_gb:g}")
    if not 0 <= tolerance < 1:
        raise QBayesError(f"the tolerance is a relative difference in [0, 1), got {tolerance:g}")
    scored = scored_options(predictor, candidates, **grid)
    table = scored.table
    mem = table.get_column("memory_gb").to_numpy()
    order, p_best = best_under_budget(mem, table.get_column("ppl_q50").to_numpy(), scored.mean, budget_gb)
    rank = np.full(table.height, None, dtype=object)
    prob = np.full(table.height, np.nan)
    rank[order] = np.arange(1, order.size + 1)
    prob[order] = p_best
    against = np.full((table.height, len(COMPARISON)), np.nan)
    if order.size:
        against[order] = compare_to(scored.measured[:, order], 0, tolerance)
    table = table.with_columns(
        pl.Series("within_budget", mem <= budget_gb),
        pl.Series("rank", rank.tolist(), dtype=pl.Int64),
        pl.Series("p_best", prob),
        *(pl.Series(c, against[:, i]) for i, c in enumerate(COMPARISON)),
    )
    return table.sort(["rank", "memory_gb"], nulls_last=True)
