"""Readable counts of what a database holds (``qbayes db summary``)."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table as RichTable

from qbayes.db.database import Database
from qbayes.db.schema import BASELINE_METHOD


def counts(db: Database) -> dict[str, pl.DataFrame]:
    """Count tables: results by family, method, bits and evaluation set, plus sources."""
    res = db.results.join(db.models.select("model", "family"), on="model", how="left")
    quant = res.filter(pl.col("method") != BASELINE_METHOD)

    def by(df: pl.DataFrame, col: str) -> pl.DataFrame:
        return df.group_by(col).agg(pl.len().alias("rows")).sort(col, nulls_last=True)

    fam = (
        res.group_by("family")
        .agg(
            pl.col("model").n_unique().alias("models"),
            (pl.col("method") == BASELINE_METHOD).sum().alias("baselines"),
            (pl.col("method") != BASELINE_METHOD).sum().alias("quantized"),
            pl.len().alias("rows"),
        )
        .sort("family")
    )
    return {
        "family": fam,
        "method": by(quant, "method"),
        "w_bits": by(quant, "w_bits"),
        "eval_set": by(res, "eval_set"),
        "source": by(res, "source"),
        "doubt": by(res, "doubt"),
    }


def render(db: Database, *, title: str, console: Console | None = None) -> None:
    console = console or Console()
    tables = counts(db)
    n_res = db.results.height
    n_base = db.results.filter(pl.col("method") == BASELINE_METHOD).height
    console.print(
        f"[bold]{title}[/bold]: {db.models.height} models in "
        f"{db.models.get_column('family').n_unique()} families; {n_res} results "
        f"({n_base} unquantized baselines, {n_res - n_base} quantized); "
        f"{db.features.height} feature values; {db.failures.height} recorded failures"
    )
    for name, df in tables.items():
        t = RichTable(title=f"by {name}", title_justify="left")
        for col in df.columns:
            t.add_column(col, justify="right" if df.schema[col].is_numeric() else "left")
        for row in df.iter_rows():
            t.add_row(*["—" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for v in row])
        console.print(t)
