"""Row-level helpers for task shards: one model's rows, and one database over another.

* :func:`model_rows` is what a task starts from: the rows ``--out`` already holds for its
  model (no failures), so the collector skips what is done;
* :func:`overlay` puts a database's rows over another's, replacing rows of the same
  configuration, the way a shard replaces a recomputed configuration.
"""

from __future__ import annotations

import polars as pl

from qbayes.collect.shard import REPLACE_KEY, replace_rows
from qbayes.db.database import Database


def model_rows(db: Database, model: str) -> Database:
    """``db``'s models, results, accuracy and features rows of one model."""
    db = db.conform()
    tables = ("models", "results", "accuracy", "features")
    keep = {name: getattr(db, name).filter(pl.col("model") == model) for name in tables}
    return Database(**keep)


def overlay(base: Database, top: Database) -> Database:
    """``base`` with ``top``'s rows added; a row of ``top`` replaces the ``base`` row of the
    same configuration."""
    base, top = base.conform(), top.conform()
    return Database(
        **{name: replace_rows(getattr(base, name), getattr(top, name), key) for name, key in REPLACE_KEY.items()}
    )


def count(db: Database) -> str:
    return (
        f"{db.results.height} results, {db.accuracy.height} task scores, {db.models.height} models, "
        f"{db.features.height} features, "
        f"{db.failures.height} failures"
    )
