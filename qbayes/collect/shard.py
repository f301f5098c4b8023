"""The shard a collection run writes: what is already there, adding rows, saving.

A shard is a database directory (:mod:`qbayes.db.store`). Opening one that exists loads
(and validates) it, so a rerun can skip what is done. Rows added replace rows of the same
configuration, so a forced recomputation or a retried configuration never duplicates.
Every :meth:`Shard.save` is atomic; the runner saves after each configuration, so a
killed run loses at most the configuration in progress.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from qbayes.db import store
from qbayes.db.database import Database
from qbayes.db.schema import TABLES

SOURCE = "qbayes-collect"
# the columns that identify a collected configuration (group_size is left out: some
# backends choose it themselves, and it is recorded, not requested)
RESULT_ID = ("model", "method", "dtype_label", "calib_set", "eval_set", "seq_len", "source")
ACCURACY_ID = ("model", "method", "dtype_label", "calib_set", "task", "shots", "metric", "source")
FEATURE_ID = TABLES["features"].key
MODEL_ID = ("model",)
# per table, the columns whose values a new row replaces an old one for
REPLACE_KEY = {
    "models": MODEL_ID,
    "results": RESULT_ID,
    "accuracy": ACCURACY_ID,
    "features": FEATURE_ID,
    "failures": TABLES["failures"].key,
}


def _frame(rows: list[dict], table: str) -> pl.DataFrame:
    t = TABLES[table]
    full = [{c: r.get(c) for c in t.names} for r in rows]
    return pl.DataFrame(full, schema=t.polars_schema, orient="row") if full else t.empty()


def replace_rows(old: pl.DataFrame, new: pl.DataFrame, key: tuple[str, ...]) -> pl.DataFrame:
    """``old`` with ``new`` added; a row of ``new`` replaces the ``old`` rows that share its ``key``."""
    if new.height == 0:
        return old
    kept = old.join(new.select(key).unique(), on=list(key), how="anti", nulls_equal=True)
    return pl.concat([kept, new], how="vertical")


class Shard:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and any(self.path.glob("*.parquet")):
            self.db = store.load(self.path).conform()
        else:
            self.db = Database()

    # --- what is there ------------------------------------------------------------

    def has_result(self, **ident) -> bool:
        return self._has(self.db.results, {"source": SOURCE, **ident}, RESULT_ID)

    def has_accuracy(self, **ident) -> bool:
        """Whether the shard holds a task score (any metric, any shots) of ``ident``."""
        return self._has(self.db.accuracy, {"source": SOURCE, **ident}, ("source", *ident))

    def has_feature(self, **ident) -> bool:
        return self._has(self.db.features, ident, tuple(ident))

    @staticmethod
    def _has(df: pl.DataFrame, ident: dict, cols: tuple[str, ...]) -> bool:
        expr = pl.lit(True)
        for c in cols:
            v = ident.get(c)
            expr = expr & (pl.col(c).is_null() if v is None else (pl.col(c) == v))
        return df.filter(expr).height > 0

    # --- adding rows --------------------------------------------------------------

    def add_models(self, rows: list[dict]) -> None:
        self.db.models = replace_rows(self.db.models, _frame(rows, "models"), MODEL_ID)

    def add_results(self, rows: list[dict]) -> None:
        rows = [{"source_kind": "collector", "source": SOURCE, "source_table": None, **r} for r in rows]
        self.db.results = replace_rows(self.db.results, _frame(rows, "results"), RESULT_ID)

    def add_accuracy(self, rows: list[dict]) -> None:
        rows = [{"source_kind": "collector", "source": SOURCE, "source_table": None, **r} for r in rows]
        self.db.accuracy = replace_rows(self.db.accuracy, _frame(rows, "accuracy"), ACCURACY_ID)

    def add_features(self, rows: list[dict]) -> None:
        self.db.features = replace_rows(self.db.features, _frame(rows, "features"), FEATURE_ID)

    def add_failures(self, rows: list[dict]) -> None:
        self.db.failures = replace_rows(self.db.failures, _frame(rows, "failures"), REPLACE_KEY["failures"])

    def save(self) -> None:
        store.save(self.db, self.path)
