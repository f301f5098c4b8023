"""Checks a table against the schema: types, ranges, allowed values, keys, baselines.

Every check returns :class:`Problem` records naming the file, the (1-based) row and the
column, so a user can go straight to the bad cell.  Nothing here raises on bad data.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from qbayes.db.schema import ACCURACY, BASELINE_METHOD, MODELS, RESULTS, TABLES, Column, Table
from qbayes.errors import suggest

ROW_INDEX = "__row__"
MAX_ROWS_LISTED = 20


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    row: int | None = None  # 1-based data row
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


def check_columns(df: pl.DataFrame, table: Table, file: str) -> list[Problem]:
    """Missing, unknown and wrongly typed columns."""
    problems = []
    for name in table.names:
        if name not in df.columns:
            problems.append(Problem(file, f"missing column '{name}'", column=name))
    for name in df.columns:
        if name not in table.names and name != ROW_INDEX:
            problems.append(Problem(file, f"unknown column '{name}'{suggest(name, table.names)}", column=name))
    for col in table.columns:
        if col.name in df.columns and df.schema[col.name] != col.dtype:
            if df.schema[col.name] == pl.Null:  # an all-null column read from CSV/JSON
                continue
            problems.append(Problem(file, f"has type {df.schema[col.name]}, expected {col.dtype}", column=col.name))
    return problems


def _rows(df: pl.DataFrame, mask: pl.Expr) -> list[int]:
    return df.filter(mask).get_column(ROW_INDEX).head(MAX_ROWS_LISTED).to_list()


def _cell_problems(df: pl.DataFrame, col: Column, file: str) -> list[Problem]:
    c = pl.col(col.name)
    out: list[Problem] = []

    def add(mask: pl.Expr, message: str) -> None:
        bad = df.filter(mask)
        for row, value in zip(
            bad.get_column(ROW_INDEX).head(MAX_ROWS_LISTED).to_list(),
            bad.get_column(col.name).head(MAX_ROWS_LISTED).to_list(),
        ):
            out.append(Problem(file, message.format(value=value), row=row, column=col.name))
        if bad.height > MAX_ROWS_LISTED:
            out.append(Problem(file, f"... and {bad.height - MAX_ROWS_LISTED} more rows like these", column=col.name))

    if not col.nullable:
        add(c.is_null(), "is empty but required")
    if col.dtype == pl.Float64:
        add(c.is_nan(), "is NaN")
    if col.lo is not None:
        bad = (c < col.lo) if col.lo_inclusive else (c <= col.lo)
        op = ">=" if col.lo_inclusive else ">"
        add(bad & c.is_not_nan() if col.dtype == pl.Float64 else bad, f"value {{value}} must be {op} {col.lo}")
    if col.hi is not None:
        add(c > col.hi, f"value {{value}} must be <= {col.hi}")
    if col.allowed is not None:
        bad = df.filter(c.is_not_null() & ~c.is_in(list(col.allowed)))
        for row, value in zip(
            bad.get_column(ROW_INDEX).head(MAX_ROWS_LISTED).to_list(),
            bad.get_column(col.name).head(MAX_ROWS_LISTED).to_list(),
        ):
            out.append(
                Problem(
                    file,
                    f"unknown value '{value}'{suggest(value, col.allowed)}; allowed: {', '.join(col.allowed)}",
                    row=row,
                    column=col.name,
                )
            )
    return out


def check_table(df: pl.DataFrame, table: Table, file: str) -> list[Problem]:
    """Every schema check for one table. ``df`` may have any dtypes; cells are checked
    only once the column types are right."""
    problems = check_columns(df, table, file)
    if problems:
        return problems
    df = df.with_row_index(ROW_INDEX, offset=1)
    for col in table.columns:
        problems += _cell_problems(df, col, file)
    dup = df.filter(pl.struct(list(table.key)).is_duplicated())
    if dup.height:
        groups = dup.group_by(list(table.key), maintain_order=True).agg(pl.col(ROW_INDEX))
        for rows in groups.get_column(ROW_INDEX).head(MAX_ROWS_LISTED).to_list():
            problems.append(Problem(file, f"duplicate key {table.key} in rows {rows}", row=rows[0]))
    return problems


BASELINE_KEY = ("model", "eval_set", "source", "source_table")
# an accuracy is compared with the unquantized model's on the same task, scored the same way
ACCURACY_BASELINE_KEY = ("model", "task", "shots", "metric", "source", "source_table")


def check_baselines(results: pl.DataFrame, file: str, key: tuple[str, ...] = BASELINE_KEY) -> list[Problem]:
    """Every quantized row needs an unquantized row with the same ``key`` columns: for
    perplexities model, evaluation set, source and source table (protocols differ between
    sources); for accuracies :data:`ACCURACY_BASELINE_KEY`."""
    df = results.with_row_index(ROW_INDEX, offset=1)
    base = df.filter(pl.col("method") == BASELINE_METHOD).select(key).unique()
    quant = df.filter(pl.col("method") != BASELINE_METHOD)
    orphans = quant.join(base, on=list(key), how="anti", nulls_equal=True)
    return [
        Problem(
            file,
            "quantized row has no unquantized baseline for " + ", ".join(f"{k} '{v}'" for k, v in zip(key, values)),
            row=r,
        )
        for r, *values in orphans.select(ROW_INDEX, *key).head(MAX_ROWS_LISTED).iter_rows()
    ]


def check_models_known(results: pl.DataFrame, models: pl.DataFrame, file: str) -> list[Problem]:
    """Every result must refer to a model in the models table."""
    known = set(models.get_column("model").to_list())
    df = results.with_row_index(ROW_INDEX, offset=1)
    missing = df.filter(~pl.col("model").is_in(list(known)))
    return [
        Problem(file, f"model '{m}' is not in the models table{suggest(m, known)}", row=r, column="model")
        for r, m in missing.select(ROW_INDEX, "model").head(MAX_ROWS_LISTED).iter_rows()
    ]


def check_database(tables: dict[str, pl.DataFrame], files: dict[str, str]) -> list[Problem]:
    """All checks for a loaded database (tables keyed by name, files by table name)."""
    problems: list[Problem] = []
    for name, df in tables.items():
        problems += check_table(df, TABLES[name], files[name])
    if problems:
        return problems
    models = tables.get(MODELS.name)
    for table, key in ((RESULTS, BASELINE_KEY), (ACCURACY, ACCURACY_BASELINE_KEY)):
        rows = tables.get(table.name)
        if rows is not None:
            problems += check_baselines(rows, files[table.name], key)
            if models is not None:
                problems += check_models_known(rows, models, files[table.name])
    return problems
