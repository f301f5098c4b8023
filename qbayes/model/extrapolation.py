"""Which predictions lie outside what the fit was fitted on.

A query of 1,000B parameters, of 40T training tokens or of 1.5 bits per weight is
predicted by the same law as the fitted rows, but no fitted row checks the law there; an
i-quant format (IQ2_XXS ...) is predicted as a k-quant of its bits per weight though no
fitted row was an i-quant. The prediction stands, and the user is told:
:func:`outside` flags each row in the columns :data:`OUTSIDE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.db import named_formats
from qbayes.model.fitfile import Fit

# the flag columns, and what each says, for the command line
OUTSIDE = {
    "outside_params": "size",
    "outside_tokens": "training tokens",
    "outside_bits": "bits per weight",
    "outside_format_kind": "kind of format",
}
# format kinds that the bits per weight do not describe, by the pattern of their names
KINDS = {"i-quant": re.compile(r"^IQ\d", re.IGNORECASE)}
BITS_MATCH = 1e-3  # a fitted row has a format's kind when its bits per weight equal the format's


@dataclass(frozen=True)
class FittedRange:
    """What a fit's training rows span: sizes (billions of parameters), training tokens
    (billions, rows that give them) and bits per weight, each (min, max); and the format
    kinds of :data:`KINDS` that some fitted row has."""

    params_b: tuple[float, float]
    train_tokens_b: tuple[float, float]
    bits: tuple[float, float]
    kinds: frozenset[str]

    @classmethod
    def of(cls, fit: Fit) -> FittedRange:
        data = fit.data

        def span(column: str) -> tuple[float, float]:
            s = data.get_column(column).drop_nulls()
            return (float(s.min()), float(s.max())) if s.len() else (np.nan, np.nan)

        return cls(
            params_b=span("params_b"),
            train_tokens_b=span("train_tokens_b"),
            bits=span("bits"),
            kinds=frozenset(k for k in KINDS if _rows_of_kind(data, k)),
        )


def _rows_of_kind(data: pl.DataFrame, kind: str) -> bool:
    """Whether a fitted row is of ``kind``. The training table names no formats, so a row
    counts when its method and bits per weight are those of a format of that kind."""
    pattern = KINDS[kind]
    fmts = [f for f in named_formats.load().formats if pattern.match(f.name)]
    for f in fmts:
        same = (data.get_column("method") == f.method) & (
            (data.get_column("bits") - f.bits_per_weight).abs() < BITS_MATCH
        )
        if same.any():
            return True
    return False


def kind_of(format_name: str | None) -> str | None:
    """The kind of :data:`KINDS` a format name belongs to, or None."""
    if not format_name:
        return None
    return next((k for k, pattern in KINDS.items() if pattern.match(format_name)), None)


def outside(
    fitted: FittedRange,
    params_b: pl.Series,
    train_tokens_b: pl.Series,
    bits: pl.Series,
    formats: pl.Series | None = None,
) -> pl.DataFrame:
    """Per row, the columns of :data:`OUTSIDE`: size, training tokens (those the row was
    predicted with; unknown ones are not flagged) or bits per weight outside the fitted
    range, and a format whose kind no fitted row has."""

    def beyond(s: pl.Series, span: tuple[float, float]) -> pl.Series:
        x = s.cast(pl.Float64)
        return ((x < span[0]) | (x > span[1])).fill_null(False)

    n = params_b.len()
    names = formats.to_list() if formats is not None else [None] * n
    kind = [kind_of(f) for f in names]
    return pl.DataFrame(
        {
            "outside_params": beyond(params_b, fitted.params_b),
            "outside_tokens": beyond(train_tokens_b, fitted.train_tokens_b),
            "outside_bits": beyond(bits, fitted.bits),
            "outside_format_kind": pl.Series([k is not None and k not in fitted.kinds for k in kind], dtype=pl.Boolean),
        }
    )


def describe(fitted: FittedRange, row: dict) -> list[str]:
    """One line per flag raised on ``row`` (a prediction with the :data:`OUTSIDE` columns)."""
    lines = []
    spans = {
        "outside_params": ("size", row.get("params_b"), fitted.params_b, "B parameters"),
        "outside_tokens": ("training tokens", row.get("train_tokens_b_used"), fitted.train_tokens_b, "B"),
        "outside_bits": ("bits per weight", row.get("bits_per_weight", row.get("bits")), fitted.bits, ""),
    }
    for flag, (what, value, (lo, hi), unit) in spans.items():
        if row.get(flag):
            lines.append(
                f"extrapolated: {what} {float(value):.4g}{unit} lies outside the fitted {lo:.4g}-{hi:.4g}{unit}; "
                "no fitted row checks the law there"
            )
    if row.get("outside_format_kind"):
        lines.append(
            f"extrapolated: no fitted row is an {kind_of(row.get('format'))} format; {row.get('format')} is "
            "predicted as a k-quant of its bits per weight"
        )
    return lines
