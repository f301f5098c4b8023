"""The zoo analysis table: one row per quantized (model, configuration, evaluation set).

Built from a database holding zoo shards (families ``zoo-*``). Choices, in one place:

* ``delta`` = ln(ppl_q) - ln(ppl_base), nats/token, the baseline joined exactly as
  :func:`qbayes.model.table.training_table` does (same model, eval_set, source,
  source_table); weight-only rows only (``act_bits >= 16``).
* ``log_n`` = ln(non-embedding parameters) (``params_b`` where that is null), ``log_d`` =
  ln(training tokens), both in raw counts; ``log_dn`` = ``log_d - log_n``.
* ``bits`` = ``w_bits_eff`` (nominal ``w_bits`` where null). ``group`` is ``group_size`` or,
  where that is null but the label says ``-g<k>`` (quanto ``int4-g128-asym``), ``k``;
  ``per_channel`` is true when neither gives a group.
* ``config`` = ``METHOD/DTYPE_LABEL/CALIB`` (``-`` for no calibration set), the collector's
  per-layer SQNR scope prefix; ``fmt`` = ``METHOD/DTYPE_LABEL``.
* Per-model features are the ``scope == "model"`` values, averaged over calibration sets
  (activation statistics) and evaluation sets (Hessian and radial features), since the
  collector measures the landscape on one text and outliers on several: a model gets one
  value per feature. ``radial_loss`` becomes one column per radius, ``radial_loss_r<r>``.
* ``sqnr_db`` is the row's own weight SQNR; ``sqnr_min_db`` the worst layer's SQNR for that
  configuration (per-layer ``sqnr_db`` features).
* ``theory`` = sum over layers of 1/2 tr(H_l) 10^(-SQNR_l/10): the second-order loss rise for
  quantization noise of relative power 10^(-SQNR/10) (arXiv 2410.12119's argument). The
  noise power per weight is mean(w_l^2) 10^(-SQNR_l/10), but the database stores no weight
  scale, so mean(w_l^2) is taken as constant (an intercept on the log scale; within the zoo it
  shrinks with width, which ln N absorbs). Where per-layer traces or SQNRs are missing the
  whole-model 1/2 tr(H) 10^(-SQNR/10) is used; a non-positive sum (noisy Hutchinson
  estimates) gives null.
* ``size`` is the ``s<k>`` in the model name (``zoo-llama-s2-t1M``), else the rank of N within
  the family.
"""

from __future__ import annotations

import polars as pl

from qbayes.db.database import Database
from qbayes.errors import QBayesError
from qbayes.model.features import RADIAL_PREFIX, per_model_features
from qbayes.model.table import with_baseline

ZOO_PREFIX = "zoo-"
MODEL_SCOPE = "model"
ACT_FEATURES = ("act_kurtosis", "act_max_abs", "act_median_abs", "act_outlier_frac")
WEIGHT_FEATURES = ("weight_kurtosis", "weight_max_over_std")
HESSIAN_FEATURES = ("hessian_trace", "hessian_top_eig")
MODEL_FEATURES = HESSIAN_FEATURES + WEIGHT_FEATURES + ACT_FEATURES


def radial_columns(df: pl.DataFrame) -> list[str]:
    return sorted((c for c in df.columns if c.startswith(RADIAL_PREFIX)), key=lambda c: float(c[len(RADIAL_PREFIX) :]))


def feature_groups(df: pl.DataFrame) -> dict[str, list[str]]:
    """Feature group -> its columns in ``df`` (a group may be empty)."""
    groups = {
        "hessian": list(HESSIAN_FEATURES),
        "radial": radial_columns(df),
        "sqnr": ["sqnr_db", "sqnr_min_db"],
        "act_outliers": list(ACT_FEATURES),
        "weight_outliers": list(WEIGHT_FEATURES),
        "theory": ["theory"],
    }
    return {g: [c for c in cols if c in df.columns] for g, cols in groups.items()}


def feature_columns(df: pl.DataFrame) -> list[str]:
    return [c for cols in feature_groups(df).values() for c in cols]


def zoo_table(db: Database) -> pl.DataFrame:
    """One row per quantized (zoo model, configuration, evaluation set); see the module doc.
    Raises :class:`QBayesError` when the database holds no zoo rows."""
    models = db.models.filter(pl.col("family").str.starts_with(ZOO_PREFIX))
    if models.height == 0:
        families = sorted(set(db.models["family"]))
        raise QBayesError(
            f"no zoo models in the database (families starting with '{ZOO_PREFIX}'; found: "
            f"{', '.join(families[:12]) or 'none'}). Merge zoo shards first, e.g. "
            "`qbayes db merge SHARD... --into zoo-db`, then pass --data zoo-db."
        )
    res = db.results.filter(pl.col("model").is_in(models["model"].implode()) & (pl.col("act_bits") >= 16))
    df = with_baseline(res).with_columns(pl.col("fp16_ppl").log().alias("nll_base")).drop("fp16_ppl")
    if df.height == 0:
        raise QBayesError(
            f"{models.height} zoo model(s) but no quantized result with an unquantized "
            "baseline on the same evaluation set; nothing to analyse"
        )
    label_group = pl.col("dtype_label").str.extract(r"-g(\d+)", 1).cast(pl.Int64)
    df = df.with_columns(
        (pl.col("ppl").log() - pl.col("nll_base")).alias("delta"),
        pl.coalesce("w_bits_eff", "w_bits").alias("bits"),
        pl.coalesce(pl.col("group_size"), label_group).alias("group"),
        pl.col("calib_set").fill_null("-").alias("calib"),
    ).with_columns(
        pl.col("group").is_null().alias("per_channel"),
        pl.col("group").cast(pl.Float64).log(2).fill_null(0.0).alias("log2_group"),
        pl.concat_str("method", "dtype_label", "calib", separator="/").alias("config"),
        pl.concat_str("method", "dtype_label", separator="/").alias("fmt"),
    )
    df = df.join(_model_covariates(models), on="model", how="inner")
    if df.height == 0:
        raise QBayesError(
            "the zoo models have no training tokens (train_tokens_b) in the models table; the D/N analysis needs them"
        )
    df = df.join(_model_features(db.features, models["model"]), on="model", how="left")
    df = df.join(_layer_terms(db.features, models["model"]), on=["model", "config"], how="left")
    theory_whole = 0.5 * pl.col("hessian_trace") * 10.0 ** (-pl.col("sqnr_db") / 10.0)
    theory = pl.coalesce("theory_layers", theory_whole)
    df = df.with_columns(pl.when(theory > 0).then(theory).otherwise(None).alias("theory"))
    front = [
        "model",
        "family",
        "architecture",
        "size",
        "method",
        "w_kind",
        "dtype_label",
        "calib",
        "config",
        "fmt",
        "eval_set",
        "w_bits",
        "bits",
        "group",
        "per_channel",
        "log2_group",
        "n_params",
        "tokens",
        "log_n",
        "log_d",
        "log_dn",
        "nll_base",
        "delta",
        "sqnr_db",
        "sqnr_min_db",
        "theory",
    ]
    feats = [c for c in MODEL_FEATURES if c in df.columns] + radial_columns(df)
    return df.select(front + feats).sort(["family", "log_n", "log_d", "config", "eval_set"])


def _model_covariates(models: pl.DataFrame) -> pl.DataFrame:
    n = pl.coalesce("non_embedding_params_b", "params_b") * 1e9
    out = models.select(
        "model",
        "family",
        pl.coalesce("architecture", "family").alias("architecture"),
        n.alias("n_params"),
        (pl.col("train_tokens_b") * 1e9).alias("tokens"),
        pl.col("model").str.extract(r"-(s\d+)-t", 1).alias("size"),
    ).filter(pl.col("tokens").is_not_null())
    rank = pl.col("n_params").rank("dense").over("family").cast(pl.Int64)
    return out.with_columns(
        pl.coalesce("size", pl.format("s{}", rank)).alias("size"),
        pl.col("n_params").log().alias("log_n"),
        pl.col("tokens").log().alias("log_d"),
    ).with_columns((pl.col("log_d") - pl.col("log_n")).alias("log_dn"))


def _model_features(features: pl.DataFrame, models: pl.Series) -> pl.DataFrame:
    return per_model_features(features.filter(pl.col("model").is_in(models.implode())), MODEL_FEATURES)


def _layer_terms(features: pl.DataFrame, models: pl.Series) -> pl.DataFrame:
    """Per (model, config): worst layer SQNR and sum of 1/2 tr(H_l) 10^(-SQNR_l/10) (null unless
    every layer with an SQNR has a trace)."""
    f = features.filter(pl.col("model").is_in(models.implode()) & (pl.col("scope") != MODEL_SCOPE))
    parts = pl.col("scope").str.splitn(":", 2)
    sq = (
        f.filter((pl.col("feature") == "sqnr_db") & pl.col("scope").str.contains(":", literal=True))
        .with_columns(parts.struct.field("field_0").alias("config"), parts.struct.field("field_1").alias("layer"))
        .group_by("model", "config", "layer")
        .agg(pl.col("value").mean().alias("s"))
    )
    tr = (
        f.filter(pl.col("feature") == "hessian_trace")
        .group_by("model", "scope")
        .agg(pl.col("value").mean().alias("tr"))
        .rename({"scope": "layer"})
    )
    terms = sq.join(tr, on=["model", "layer"], how="left").with_columns(
        (0.5 * pl.col("tr") * 10.0 ** (-pl.col("s") / 10.0)).alias("term")
    )
    return (
        terms.group_by("model", "config")
        .agg(
            pl.col("s").min().alias("sqnr_min_db"),
            pl.when(pl.col("tr").null_count() == 0).then(pl.col("term").sum()).otherwise(None).alias("theory_layers"),
        )
        .with_columns(pl.col("sqnr_min_db").cast(pl.Float64), pl.col("theory_layers").cast(pl.Float64))
    )
