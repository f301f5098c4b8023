"""Merging databases and shards: deduplicate on the natural key, report conflicts.

Two rows with the same natural key are *the same* when their measured values agree
(within a relative 1e-9); one is kept. When they disagree it is a *conflict*: by default
the merge refuses, listing every conflict; with ``prefer="newest"`` the row with the later
``created_at`` wins and the losing rows are returned so the caller can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from qbayes.db.database import Database
from qbayes.db.schema import TABLES
from qbayes.errors import QBayesError

# columns whose disagreement makes two same-key rows a conflict
MEASURED = {
    "models": ("params_b", "train_tokens_b", "family"),
    "results": ("ppl",),
    "accuracy": ("acc",),
    "features": ("value",),
    "failures": (),
}
ORDER = "__order__"


@dataclass(frozen=True)
class Conflict:
    table: str
    key: dict
    values: list[dict]

    def __str__(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items() if v is not None)
        vals = "; ".join(", ".join(f"{k}={v}" for k, v in v.items()) for v in self.values)
        return f"{self.table}: [{key}] has differing values: {vals}"


class MergeConflict(QBayesError):
    def __init__(self, conflicts: list[Conflict]):
        self.conflicts = conflicts
        super().__init__(
            f"{len(conflicts)} conflicting row(s) (same key, different values); nothing written. "
            "Use --prefer newest to keep the most recent row.\n  " + "\n  ".join(map(str, conflicts))
        )


def _agrees(values: list) -> bool:
    first = values[0]
    for v in values[1:]:
        if (v is None) != (first is None):
            return False
        if isinstance(v, float) and isinstance(first, float):
            if abs(v - first) > 1e-9 * max(abs(v), abs(first), 1e-300):
                return False
        elif v != first:
            return False
    return True


def _merge_table(name: str, frames: list[pl.DataFrame], prefer: str | None):
    table = TABLES[name]
    key, measured = list(table.key), list(MEASURED[name])
    df = pl.concat(frames, how="vertical").with_row_index(ORDER)
    if df.height == 0:
        return df.drop(ORDER), [], []
    dup_mask = pl.struct(key).is_duplicated()
    single = df.filter(~dup_mask)
    multi = df.filter(dup_mask)
    keep_rows, conflicts, dropped = [], [], []
    newest_first = "created_at" in df.columns
    for _, group in multi.group_by(key, maintain_order=True):
        vals = group.select(measured).to_dicts() if measured else [{}] * group.height
        if all(_agrees([v[m] for v in vals]) for m in measured):
            keep_rows.append(group.head(1))
            continue
        conflict = Conflict(name, group.select(key).row(0, named=True), vals)
        if prefer != "newest":
            conflicts.append(conflict)
            continue
        ordered = group.sort(["created_at", ORDER] if newest_first else [ORDER], descending=True, nulls_last=True)
        keep_rows.append(ordered.head(1))
        dropped.append(conflict)
    merged = pl.concat([single, *keep_rows], how="vertical").sort(ORDER).drop(ORDER)
    return merged, conflicts, dropped


def merge(dbs: list[Database], *, prefer: Literal["newest"] | None = None) -> tuple[Database, list[Conflict]]:
    """Merge databases in order. Returns the merged database and the conflicts that were
    resolved by ``prefer`` (empty when there were none). Raises :class:`MergeConflict` when
    rows conflict and no preference is given."""
    dbs = [d.conform() for d in dbs]
    out, conflicts, dropped = {}, [], []
    for name in TABLES:
        merged, c, d = _merge_table(name, [getattr(db, name) for db in dbs], prefer)
        out[name] = merged
        conflicts += c
        dropped += d
    if conflicts:
        raise MergeConflict(conflicts)
    return Database(**out), dropped
