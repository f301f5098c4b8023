"""DataFrames in and out of the Python API: polars or pandas, answered in the kind given."""

from __future__ import annotations

from typing import Any

import polars as pl

from qbayes.errors import QBayesError


def is_pandas(df: Any) -> bool:
    """Whether ``df`` is a pandas DataFrame (checked without importing pandas)."""
    return type(df).__name__ == "DataFrame" and type(df).__module__.startswith("pandas")


def as_polars(df: Any, what: str) -> pl.DataFrame:
    """``df`` as a polars DataFrame; refuses anything but a polars or pandas DataFrame."""
    if isinstance(df, pl.DataFrame):
        return df
    if is_pandas(df):
        return pl.from_pandas(df)
    raise QBayesError(f"{what} must be a polars or pandas DataFrame, not {type(df).__name__}")


def like(table: pl.DataFrame, given: Any) -> Any:
    """``table`` as the kind of DataFrame ``given`` was (pandas or polars)."""
    return table.to_pandas() if is_pandas(given) else table
