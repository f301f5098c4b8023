"""Matching names case- and punctuation-blind: "Llama-2", "llama2" and "LLAMA 2" share
one key. Used wherever a name a person typed meets a name in a table (families, methods,
evaluation sets, format names, device names)."""

from __future__ import annotations

import re

import polars as pl

_NOT_KEY = r"[^a-z0-9]"


def key(name: str) -> str:
    """The matching key of a name: lower case, letters and digits only."""
    return re.sub(_NOT_KEY, "", name.lower())


def key_expr(expr: pl.Expr) -> pl.Expr:
    """:func:`key` as a polars expression."""
    return expr.str.to_lowercase().str.replace_all(_NOT_KEY, "")
