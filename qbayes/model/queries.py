"""Prediction queries: check a user's table and turn it into the standard table.

A query names a family, model, size, method, bits and evaluation set (or a format name
that says the method and bits, :mod:`qbayes.db.named_formats`), with its unquantized
perplexity. :func:`query_table` names every problem at once, with close matches for
misspelt columns.
"""

from __future__ import annotations

import polars as pl

from qbayes.db.named_formats import expand as expand_formats
from qbayes.db.named_formats import nominal_formats, table_names
from qbayes.errors import QBayesError, suggest
from qbayes.model.features import RAW_COLUMNS
from qbayes.model.table import STANDARD, effective_bits

NEW_OK = "new_ok"  # says a row's unseen levels are new on purpose (qbayes.model.unseen)
QUERY_REQUIRED = ("family", "model", "params_b", "method", "w_bits", "eval_set", "fp16_ppl")
QUERY_OPTIONAL = {
    "train_tokens_b": None,
    "arch": None,
    # the model's vocabulary size; without it, the family's (encoding.Encoding.fill)
    "vocab_size": None,
    "group_size": None,
    "act_bits": 16.0,
    "w_kind": "int",
    "source": None,
    # a format name (named_formats) fills method, bits, group and kind; bits per
    # weight, where given, is the bits covariate instead of effective_bits'
    "format": None,
    "bits_per_weight": None,
    # task accuracy (qbayes.model.accuracy.predict): an lm-eval task and the unquantized
    # model's accuracy on it, percent; not part of the standard table
    "task": None,
    "fp16_acc": None,
    **{c: None for c in RAW_COLUMNS},
    NEW_OK: False,
}


def extra_query_columns(df: pl.DataFrame) -> list[str]:
    """Columns of a query file that prediction does not use (ids, notes, observed values):
    :func:`query_table` leaves them out, and ``qbayes predict`` returns them untouched."""
    return [c for c in df.columns if c not in QUERY_REQUIRED and c not in QUERY_OPTIONAL]


def query_table(df: pl.DataFrame, where: str = "queries") -> pl.DataFrame:
    """Check and normalise prediction queries into the standard table. Raises
    :class:`QBayesError` naming every problem (missing columns with close matches,
    out-of-range values with their rows). A column that is not a query column is left out
    of the table (see :func:`extra_query_columns`) unless it looks like a misspelling of a
    query column the table lacks, which is refused."""
    if df.height == 0:
        raise QBayesError(f"{where}: no queries (the table has no rows)")
    df = expand_formats(df, where, defaults=QUERY_OPTIONAL)
    known = list(QUERY_REQUIRED) + list(QUERY_OPTIONAL)
    absent = [c for c in known if c not in df.columns]
    problems = []
    for c in QUERY_REQUIRED:
        if c not in df.columns:
            extra = [x for x in df.columns if x not in known]
            problems.append(f"missing column '{c}'{suggest(c, extra)}")
    for c in df.columns:
        hint = "" if c in known else suggest(c, absent)
        if hint:
            problems.append(f"unknown column '{c}'{hint}")
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems) + f". Expected columns: {', '.join(known)}")
    for c, default in QUERY_OPTIONAL.items():
        if c not in df.columns:
            df = df.with_columns(pl.lit(default).alias(c))
    casts = {c: STANDARD[c] for c in STANDARD if c in df.columns} | {"bits_per_weight": pl.Float64}
    out = {}
    for c, dtype in casts.items():
        s = df.get_column(c)
        if s.dtype == pl.String and dtype != pl.String:
            s = s.str.strip_chars().replace("", None)
        cast = s.cast(dtype, strict=False)
        bad = s.is_not_null() & cast.is_null()
        if bad.any():
            rows = (bad.arg_true() + 1).head(5).to_list()
            problems.append(f"column '{c}' has values that are not {dtype} in rows {rows}")
        out[c] = cast
    # -1 is how GPTQ configurations (AutoGPTQ, transformers' GPTQConfig) say "per channel"
    df = pl.DataFrame(out).with_columns(pl.col("group_size").replace(-1, None))

    def check(mask: pl.Series, msg: str):
        if mask.any():
            problems.append(f"{msg} (rows {(mask.arg_true() + 1).head(5).to_list()})")

    if not problems:
        for c in ("family", "model", "method", "eval_set", "params_b", "w_bits", "fp16_ppl"):
            check(df[c].is_null(), f"column '{c}' is empty")
        check(df["w_bits"] <= 0, "w_bits must be > 0")
        check(df["w_bits"] > 16, "w_bits must be <= 16")
        check(df["params_b"] <= 0, "params_b must be > 0")
        check(df["fp16_ppl"] <= 1, "fp16_ppl must be > 1")
        check(df["train_tokens_b"] <= 0, "train_tokens_b must be > 0")
        check(df["vocab_size"] < 2, "vocab_size must be >= 2 tokens")
        check(df["group_size"] <= 0, "group_size must be > 0 (empty or -1: one scale per output channel)")
        check((df["act_bits"] <= 0) | (df["act_bits"] > 16), "act_bits must be in (0, 16]")
        check((df["bits_per_weight"] <= 0) | (df["bits_per_weight"] > 40), "bits_per_weight must be in (0, 40]")
        for c in ("w_bits", "params_b", "fp16_ppl", "act_bits"):
            check(df[c].is_nan(), f"column '{c}' is NaN")
    if not problems:
        df = _resolve_mixes(df, problems)
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    convention = effective_bits(pl.col("w_bits"), pl.col("group_size"), pl.col("w_kind"))
    df = df.with_columns(
        pl.coalesce(pl.col("bits_per_weight"), convention).alias("bits"),
        table_names(df.get_column("format")).alias("format"),  # a label names no format of the table
    )
    return df.select(*STANDARD)


def _resolve_mixes(df: pl.DataFrame, problems: list[str]) -> pl.DataFrame:
    """Rows of a mix method (llama.cpp k-quants) given by nominal bits, without a format or
    bits per weight: a k-quant "2-bit" format stores 2.4 to 3.2 bits per weight, so reading
    2 as the bits per weight predicts Q2_K far too high. Where the nominal bits (and group
    size) name exactly one format, its row is filled from it (and names it); otherwise the
    row is refused with the formats to name instead (appended to ``problems``)."""
    open_rows = pl.col("bits_per_weight").is_null()  # a named format has filled it
    keys = df.filter(open_rows).select("method", "w_bits", "group_size").unique(maintain_order=True)
    fills = []
    for method, w_bits, group in keys.iter_rows():
        found = nominal_formats(method, w_bits, group)
        if found is None:
            continue
        at = open_rows & (pl.col("method") == method) & (pl.col("w_bits") == w_bits)
        at = at & (pl.col("group_size").is_null() if group is None else pl.col("group_size") == group)
        rows = (df.select(at).to_series().arg_true() + 1).head(5).to_list()
        grouped = "" if group is None else f" with groups of {group}"
        if len(found) != 1:
            names = ", ".join(f"{f.name} ({f.bits_per_weight:g} bits per weight)" for f in found) or "none"
            problems.append(
                f"method {method} at {w_bits:g} bits{grouped} is a family of mixed formats, not one bit width "
                f"(rows {rows}); give the format by name (--format, a 'format' column) instead of w_bits: "
                f"{names}"
            )
            continue
        f = found[0]
        fills.append(
            (
                at,
                {
                    "w_kind": f.w_kind,
                    "group_size": f.group_size,
                    "bits_per_weight": f.bits_per_weight,
                    "format": f.name,
                },
            )
        )
    for at, values in fills:
        df = df.with_columns(
            pl.when(at).then(pl.lit(v, dtype=df.schema[c])).otherwise(pl.col(c)).alias(c) for c, v in values.items()
        )
    return df
