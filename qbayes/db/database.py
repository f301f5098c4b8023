"""A database in memory: its tables, each a polars frame in the schema's column order.

Reading and writing them is :mod:`qbayes.db.store`; merging several is :mod:`qbayes.db.merge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from qbayes.db.schema import TABLES, Table
from qbayes.db.validate import Problem, check_database


@dataclass
class Database:
    """The tables of a database (each may be empty)."""

    models: pl.DataFrame = field(default_factory=lambda: TABLES["models"].empty())
    results: pl.DataFrame = field(default_factory=lambda: TABLES["results"].empty())
    accuracy: pl.DataFrame = field(default_factory=lambda: TABLES["accuracy"].empty())
    features: pl.DataFrame = field(default_factory=lambda: TABLES["features"].empty())
    failures: pl.DataFrame = field(default_factory=lambda: TABLES["failures"].empty())

    def tables(self) -> dict[str, pl.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}

    def conform(self) -> Database:
        """Columns in schema order with schema dtypes (nulls filled for missing nullable columns)."""
        out = {}
        for name, df in self.tables().items():
            out[name] = conform(df, TABLES[name])
        return Database(**out)

    def problems(self, where: str = "<memory>") -> list[Problem]:
        return check_database(self.tables(), {n: f"{where}/{n}.parquet" for n in TABLES})


def conform(df: pl.DataFrame, table: Table) -> pl.DataFrame:
    """Select the schema's columns in order, adding missing nullable ones as nulls and
    casting all-null columns. Wrong-typed data is left for the validator to report."""
    cols = []
    for col in table.columns:
        if col.name in df.columns:
            expr = pl.col(col.name)
            if df.schema[col.name] == pl.Null:
                expr = expr.cast(col.dtype)
            cols.append(expr)
        elif col.nullable:
            cols.append(pl.lit(None, dtype=col.dtype).alias(col.name))
    return df.select(cols) if cols else df
