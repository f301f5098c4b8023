"""The standard table: one row per quantized result, one column per quantity the model
uses, in the units and reference points its covariates are centred on.

:func:`training_table` builds it from the database (each quantized row joined to its
unquantized baseline, with the degradation ``delta``); :mod:`qbayes.model.queries` builds
the same table from prediction queries. Fit and predict read nothing else.
"""

from __future__ import annotations

import math

import polars as pl

from qbayes.db.database import Database
from qbayes.db.named_formats import table_names
from qbayes.db.schema import BASELINE_METHOD
from qbayes.errors import unknown
from qbayes.model.features import RAW_COLUMNS, attach_raw

BITS_REF = 4.0  # covariates are centred here, so intercepts are 4-bit values
LOG_N_REF = math.log(7.0)  # 7B parameters
LOG_D_REF = math.log(1000.0)  # 1T training tokens
GROUP_REF = 128

STANDARD = {
    "family": pl.String,
    "arch": pl.String,
    "model": pl.String,
    "params_b": pl.Float64,
    "train_tokens_b": pl.Float64,
    "method": pl.String,
    "w_kind": pl.String,
    "w_bits": pl.Float64,
    "group_size": pl.Int64,
    "bits": pl.Float64,
    "act_bits": pl.Float64,
    "eval_set": pl.String,
    "source": pl.String,
    "fp16_ppl": pl.Float64,
    # tokens in the model's vocabulary: ln V anchors the collapse level (model.collapse);
    # null where unknown (encoding fills it from the family)
    "vocab_size": pl.Float64,
    # the named format (data/formats.csv: Q4_K_M, nf4, ...) of a row, null for one given by
    # bits and group size or a label such as int4-g128 (named_formats.table_names)
    "format": pl.String,
    **{c: pl.Float64 for c in RAW_COLUMNS},  # measured features (null for published rows)
}
PUBLISHED_KINDS = ("paper", "repository")  # results.source_kind of published rows


def effective_bits(w_bits: pl.Expr, group_size: pl.Expr, w_kind: pl.Expr) -> pl.Expr:
    """Bits per weight with one fp16 scale and one b-bit zero per group (the database's
    convention for grouped integer formats); per-channel and other kinds: nominal bits."""
    grouped = group_size.is_not_null() & w_kind.is_in(["int"])
    return pl.when(grouped).then(w_bits + (16.0 + w_bits) / group_size).otherwise(w_bits)


def training_table(
    db: Database, *, exclude_families=(), include_suspect: bool = False, rows: str = "all"
) -> pl.DataFrame:
    """Quantized rows joined to their baseline: the standard table plus ``delta``, the
    degradation ln(ppl_q) - ln(ppl_base) in nats per token. ``rows`` keeps the published
    rows, the collected ones, or all (see :data:`qbayes.model.spec.ROWS`)."""
    res = db.results
    if rows != "all":
        published = pl.col("source_kind").is_in(list(PUBLISHED_KINDS))
        res = res.filter(published if rows == "published" else ~published)
    if not include_suspect:
        res = res.filter(pl.col("doubt").is_null() | (pl.col("doubt") != "suspect"))
    quant = with_baseline(res)
    models = db.models.select(
        "model", "family", "params_b", "train_tokens_b", "vocab_size", arch_expr(db.models).alias("arch")
    )
    df = quant.join(models, on="model", how="inner")
    if exclude_families:
        unknown_fams = set(exclude_families) - set(df["family"])
        if unknown_fams:
            raise unknown("family", sorted(unknown_fams)[0], sorted(set(df["family"])))
        df = df.filter(~pl.col("family").is_in(list(exclude_families)))
    df = df.with_columns(
        pl.coalesce("w_bits_eff", "w_bits").alias("bits"),
        (pl.col("ppl").log() - pl.col("fp16_ppl").log()).alias("delta"),
        table_names(df.get_column("dtype_label")).alias("format"),
    )
    df = attach_raw(df, db.features)
    return df.select(*[pl.col(c).cast(t) for c, t in STANDARD.items()], "delta", "doubt")


# spellings of one block design: the zoo's card says gated-silu where papers say SwiGLU
_MLP_NAMES = {"gated-silu": "swiglu", "gelu_new": "gelu"}


def arch_expr(models: pl.DataFrame) -> pl.Expr:
    """A model's block design, "norm+mlp" in lower case (e.g. "rmsnorm+swiglu" for
    LLaMA-style blocks, "layernorm+relu" for OPT); null where either is unknown. Families
    that share a design share its effect, so a new LLaMA-style family starts from what
    LLaMA-style families did rather than from the average of all designs."""
    if not {"norm", "mlp"} <= set(models.columns):
        return pl.lit(None, dtype=pl.String)
    mlp = pl.col("mlp").str.to_lowercase().str.strip_chars().replace(_MLP_NAMES)
    return pl.concat_str([pl.col("norm").str.to_lowercase().str.strip_chars(), mlp], separator="+")


def with_baseline(res: pl.DataFrame) -> pl.DataFrame:
    """The quantized rows of ``res`` with ``fp16_ppl``, the unquantized perplexity of the
    same model, evaluation set and source; rows without one are dropped."""
    key = ["model", "eval_set", "source", "source_table"]
    base = res.filter(pl.col("method") == BASELINE_METHOD).group_by(key).agg(pl.col("ppl").first().alias("fp16_ppl"))
    return res.filter(pl.col("method") != BASELINE_METHOD).join(base, on=key, how="inner", nulls_equal=True)
