"""The accuracy model's training rows: each quantized task accuracy beside its unquantized
baseline, the task's chance level and size, and what is known of its configuration's
degradation Δ.

A configuration (model, method, format label, source and table) is scored on several tasks,
and all of them share its Δ on WikiText-2. Where the source prints the configuration's and
the baseline's WikiText-2 perplexities, Δ is measured (up to their rounding to two
decimals). Where another study in the perplexity database measured the same model, method,
bits and group size on WikiText-2, Δ is that (the median over studies, with a spread for
protocols differing between studies). Elsewhere the perplexity model's posterior predictive
for the configuration is its prior: the accuracy fit keeps one latent Δ per configuration, so the perplexity
model's uncertainty about it travels into the accuracy fit, and the tasks scored on one
configuration inform its Δ together (docs/accuracy.md says why this second stage, not a
joint fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.db.database import Database
from qbayes.db.schema import BASELINE_METHOD
from qbayes.db.validate import ACCURACY_BASELINE_KEY
from qbayes.errors import QBayesError, unknown
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table
from qbayes.model.spec import LOG_SHIFT
from qbayes.model.tasks import Tasks

CONFIG_KEY = (
    "model",
    "method",
    "w_kind",
    "w_bits",
    "group_size",
    "dtype_label",
    "act_bits",
    "source",
    "source_table",
)
ROW_COLUMNS = ("family", "model", "task", "config", "acc", "fp16_acc", "chance", "n_items")
# printed perplexities are rounded to 0.01: a uniform error of sd 0.01 / sqrt(12)
PRINTED_PPL_SD = 0.01 / math.sqrt(12)
MIN_LOG_SCALE = 0.02  # the narrowest prior on ln(Δ + shift) a configuration gets
# Δ measured by another study under its own protocol (sequence length, calibration data):
# the narrowest prior on ln(Δ + shift) it gives
CROSS_STUDY_LOG_SCALE = 0.15
DB_KEY = ("model", "method", "w_bits", "group_size", "act_bits")
PLACEHOLDER_FP16_PPL = 10.0  # Δ does not depend on the baseline's perplexity; the query needs one


@dataclass(frozen=True)
class AccuracyRows:
    """``rows``: one per (configuration, task), :data:`ROW_COLUMNS`; ``configs``: one per
    configuration (``config`` numbers them from 0), with its family, method, bits, group
    size, ``delta_measured`` (null where the source prints no perplexities) and the prior on
    ln(Δ + ``shift``) as ``log_delta_loc`` and ``log_delta_scale``."""

    rows: pl.DataFrame
    configs: pl.DataFrame
    shift: float = LOG_SHIFT


def paired(db: Database, tasks: Tasks, *, exclude_families=(), include_suspect: bool = False) -> pl.DataFrame:
    """Quantized accuracy rows with ``fp16_acc`` (the baseline of the same model, task,
    shots, metric, source and table), the model's family, and the task's ``chance`` and
    ``n_items``. Rows of tasks the table lacks (the sources' averages) are left out, and so
    are rows whose baseline is at or below chance (no accuracy above chance to lose)."""
    acc = db.accuracy
    if not include_suspect:
        acc = acc.filter(pl.col("doubt").is_null() | (pl.col("doubt") != "suspect"))
    key = list(ACCURACY_BASELINE_KEY)
    base = (
        acc.filter(pl.col("method") == BASELINE_METHOD)
        .group_by(key)
        .agg(pl.col("acc").first().alias("fp16_acc"), pl.col("wikitext2_ppl").first().alias("fp16_wikitext2_ppl"))
    )
    quant = acc.filter(pl.col("method") != BASELINE_METHOD).join(base, on=key, how="inner", nulls_equal=True)
    quant = quant.filter(pl.col("task").is_in(tasks.names))
    models = db.models.select("model", "family", "params_b", "train_tokens_b")
    df = quant.join(models, on="model", how="inner")
    if exclude_families:
        missing = sorted(set(exclude_families) - set(df["family"]))
        if missing:
            raise unknown("family", missing[0], sorted(set(df["family"])))
        df = df.filter(~pl.col("family").is_in(list(exclude_families)))
    chance = {t.name: t.chance for t in tasks.by_name.values()}
    n_items = {t.name: t.n_items for t in tasks.by_name.values()}
    df = df.with_columns(
        pl.col("task").replace_strict(chance, return_dtype=pl.Float64).alias("chance"),
        pl.col("task").replace_strict(n_items, return_dtype=pl.Int64).alias("n_items"),
    )
    return df.filter(pl.col("fp16_acc") > pl.col("chance"))


def measured_delta(df: pl.DataFrame) -> pl.DataFrame:
    """``delta_measured`` = ln(ppl_q / ppl_fp16) where both WikiText-2 perplexities are
    printed (null elsewhere), with ``delta_measured_sd`` from their rounding."""
    q, f = pl.col("wikitext2_ppl"), pl.col("fp16_wikitext2_ppl")
    return df.with_columns(
        (q.log() - f.log()).alias("delta_measured"),
        (PRINTED_PPL_SD * (q.pow(-2) + f.pow(-2)).sqrt()).alias("delta_measured_sd"),
    )


def fp16_wikitext2(db: Database) -> dict[str, float]:
    """model -> its unquantized WikiText-2 perplexity (median over sources) from the
    perplexity rows, for the queries that ask the perplexity model for Δ."""
    base = db.results.filter((pl.col("method") == BASELINE_METHOD) & (pl.col("eval_set") == "wikitext2"))
    return dict(base.group_by("model").agg(pl.col("ppl").median()).iter_rows())


def database_delta(db: Database) -> pl.DataFrame:
    """Per :data:`DB_KEY` on WikiText-2 in the perplexity rows: ``db_log_delta`` (median over
    studies of ln(Δ + shift)), ``db_log_scale`` (their spread, at least
    :data:`CROSS_STUDY_LOG_SCALE`) and ``db_n`` (studies)."""
    res = db.results.filter(
        (pl.col("eval_set") == "wikitext2") & (pl.col("doubt").is_null() | (pl.col("doubt") != "suspect"))
    )
    key = ["model", "eval_set", "source", "source_table"]
    base = res.filter(pl.col("method") == BASELINE_METHOD).group_by(key).agg(pl.col("ppl").first().alias("base"))
    quant = res.filter(pl.col("method") != BASELINE_METHOD).join(base, on=key, how="inner", nulls_equal=True)
    y = ((pl.col("ppl").log() - pl.col("base").log()).clip(0.0) + LOG_SHIFT).log()
    return (
        quant.with_columns(y.alias("y"))
        .group_by(list(DB_KEY))
        .agg(
            pl.col("y").median().alias("db_log_delta"),
            pl.max_horizontal(pl.col("y").std().fill_null(0.0), pl.lit(CROSS_STUDY_LOG_SCALE)).alias("db_log_scale"),
            pl.len().alias("db_n"),
        )
    )


def delta_queries(configs: pl.DataFrame, fp16_ppl: dict[str, float]) -> pl.DataFrame:
    """The perplexity model's queries for the configurations: WikiText-2, the model's own
    baseline perplexity where known (Δ does not depend on it)."""
    known = pl.col("model").replace_strict(fp16_ppl, default=None, return_dtype=pl.Float64)
    q = configs.select(
        "family",
        "model",
        "params_b",
        "train_tokens_b",
        "method",
        "w_bits",
        "group_size",
        "act_bits",
        "w_kind",
        pl.lit("wikitext2").alias("eval_set"),
        pl.coalesce(known, pl.col("fp16_wikitext2_ppl"), pl.lit(PLACEHOLDER_FP16_PPL)).alias("fp16_ppl"),
    )
    return query_table(q, "accuracy configurations")


def log_delta_draws(predictor: Predictor, queries: pl.DataFrame, shift: float) -> np.ndarray:
    """(N, S) draws of ln(Δ + shift) from the perplexity model's posterior predictive."""
    delta = predictor.delta(predictor.prepare(queries))
    return np.log(np.maximum(delta + shift, shift / 10))


def build(
    db: Database, tasks: Tasks, predictor: Predictor, *, exclude_families=(), include_suspect: bool = False
) -> AccuracyRows:
    """The training rows of ``db`` (see :func:`paired`), each configuration's Δ measured or
    its prior from ``predictor``."""
    df = measured_delta(paired(db, tasks, exclude_families=exclude_families, include_suspect=include_suspect))
    if df.height == 0:
        raise QBayesError("no quantized accuracy rows with baselines of known tasks to fit")
    df = df.with_columns(pl.struct(list(CONFIG_KEY)).rank("dense").cast(pl.Int64).sub(1).alias("config"))
    configs = (
        df.group_by("config")
        .agg(
            *[pl.col(c).first() for c in (*CONFIG_KEY, "family", "params_b", "train_tokens_b")],
            pl.col("wikitext2_ppl").first(),
            pl.col("fp16_wikitext2_ppl").first(),
            pl.col("delta_measured").first(),
            pl.col("delta_measured_sd").first(),
        )
        .sort("config")
    )
    shift = LOG_SHIFT
    y = log_delta_draws(predictor, delta_queries(configs, fp16_wikitext2(db)), shift)
    med = np.median(y, axis=1)
    mad = 1.4826 * np.median(np.abs(y - med[:, None]), axis=1)
    measured = configs["delta_measured"].to_numpy().astype(float)
    measured_sd = configs["delta_measured_sd"].to_numpy().astype(float)
    in_db = configs.join(database_delta(db), on=list(DB_KEY), how="left", nulls_equal=True, maintain_order="left")
    db_loc = in_db["db_log_delta"].to_numpy().astype(float)
    db_scale = in_db["db_log_scale"].to_numpy().astype(float)
    printed, studied = ~np.isnan(measured), ~np.isnan(db_loc)
    m_clip = np.maximum(np.nan_to_num(measured), 0.0)
    loc = np.where(printed, np.log(m_clip + shift), np.where(studied, db_loc, med))
    scale = np.where(printed, np.nan_to_num(measured_sd) / (m_clip + shift), np.where(studied, db_scale, mad))
    source = np.where(printed, "printed", np.where(studied, "database", "model"))
    configs = configs.with_columns(
        pl.Series("log_delta_loc", loc),
        pl.Series("log_delta_scale", np.maximum(scale, MIN_LOG_SCALE)),
        pl.Series("delta_from", source),
        pl.Series("model_log_delta_loc", med),
        pl.Series("model_log_delta_scale", np.maximum(mad, MIN_LOG_SCALE)),
    )
    rows = df.select(*ROW_COLUMNS).sort("config", "task")
    return AccuracyRows(rows=rows, configs=configs, shift=shift)
