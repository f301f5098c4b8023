"""Reading and writing databases (:class:`~qbayes.db.database.Database`): a directory with
one parquet file per table.

Writes are atomic: each table goes to a temporary file in the same directory and is
renamed over the old one only after every table of the database has been written, so a
crash leaves either the old or the new files, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from qbayes import resources
from qbayes.db.database import Database
from qbayes.db.merge import merge
from qbayes.db.schema import ADDED_COLUMNS, META_TABLE_KEY, META_VERSION_KEY, SCHEMA_VERSION, TABLES, Table
from qbayes.db.validate import Problem, check_database
from qbayes.errors import QBayesError


class InvalidDatabase(QBayesError):
    """A database or shard that fails validation; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__(f"{len(problems)} problem(s):\n  " + "\n  ".join(lines))


def read_table(path: Path, table: Table) -> pl.DataFrame:
    """Read one parquet table, refusing unreadable files and newer schema versions."""
    try:
        meta = pl.read_parquet_metadata(path)
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for corrupt files
        raise QBayesError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    version = meta.get(META_VERSION_KEY)
    if version is not None:
        try:
            v = int(version)
        except ValueError:
            raise QBayesError(f"{path}: bad schema version {version!r} in metadata") from None
        if v > SCHEMA_VERSION:
            raise QBayesError(
                f"{path}: written with database schema v{v}, newer than this qbayes reads "
                f"(v{SCHEMA_VERSION}); upgrade qbayes to read it"
            )
    found = meta.get(META_TABLE_KEY)
    if found is not None and found != table.name:
        raise QBayesError(f"{path}: holds table '{found}', expected '{table.name}'")
    added = [table.column(c) for c in ADDED_COLUMNS.get(table.name, ()) if c not in df.columns]
    if not added:
        return df
    # the added columns take their place in the schema's order, as in a file written today
    df = df.with_columns(pl.lit(None, dtype=c.dtype).alias(c.name) for c in added)
    return df.select(*[c for c in table.names if c in df.columns], *[c for c in df.columns if c not in table.names])


def load(path: str | os.PathLike, *, validate: bool = True) -> Database:
    """Load a database directory. Missing table files are empty tables; at least one must exist."""
    root = Path(path)
    if not root.is_dir():
        raise QBayesError(f"{root}: no such database directory")
    tables = {}
    for name, table in TABLES.items():
        f = root / f"{name}.parquet"
        tables[name] = read_table(f, table) if f.exists() else table.empty()
    if not any((root / f"{n}.parquet").exists() for n in TABLES):
        raise QBayesError(f"{root}: no database tables ({', '.join(n + '.parquet' for n in TABLES)})")
    db = Database(**tables)
    if validate:
        problems = check_database(db.tables(), {n: str(root / f"{n}.parquet") for n in TABLES})
        if problems:
            raise InvalidDatabase(problems)
    return db


def load_many(paths: list[str | os.PathLike]) -> Database:
    """Load and concatenate several databases (no deduplication; see :mod:`merge`)."""
    db, _ = merge([load(p) for p in paths])
    return db


def load_paths(paths: Sequence[str | os.PathLike] = ()) -> Database:
    """The database(s) at ``paths`` merged, or the shipped database when none is given
    (what ``--data`` and ``qbayes.fit(data=...)`` read)."""
    paths = list(paths) or [resources.database_dir()]
    return load(paths[0]) if len(paths) == 1 else load_many(paths)


def save(db: Database, path: str | os.PathLike, *, validate: bool = True) -> None:
    """Write every table atomically into ``path`` (created if needed)."""
    root = Path(path)
    db = db.conform()
    if validate:
        problems = db.problems(str(root))
        if problems:
            raise InvalidDatabase(problems)
    root.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, df in db.tables().items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=root)
            os.close(fd)
            staged.append((tmp, root / f"{name}.parquet"))
            df.write_parquet(tmp, metadata={META_VERSION_KEY: str(SCHEMA_VERSION), META_TABLE_KEY: name})
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
