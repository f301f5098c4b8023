"""The models a collection run covers: ``--model DIR`` (repeatable) and ``--models FILE``.

A manifest is a CSV file with a header row and the columns ``path``, ``family`` and,
optionally, ``name`` (other columns are ignored, so a manifest written by ``qbayes zoo
train`` can carry more). ``path`` is a model directory saved with ``save_pretrained``;
a relative path is resolved against the manifest's own directory. An empty ``name``
means the directory's name, as for ``--model``.

Model directories are not checked here: a missing one fails in the collector, which
records the failure in the shard like any other.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qbayes.atomic import atomic_path
from qbayes.errors import QBayesError, suggest

COLUMNS = ("path", "family", "name")
REQUIRED = ("path", "family")


@dataclass(frozen=True)
class ModelEntry:
    """One model to collect: its directory, its family and its name in the database."""

    path: Path
    family: str
    name: str

    @classmethod
    def make(cls, path: str | Path, family: str, name: str | None = None) -> ModelEntry:
        path = Path(path)
        return cls(path, family, name or path.resolve().name)


def read_manifest(file: str | Path) -> tuple[ModelEntry, ...]:
    """The models listed in a manifest CSV (see the module docstring)."""
    file = Path(file)
    if not file.is_file():
        raise QBayesError(f"{file}: no such model manifest (a CSV file with the columns {','.join(COLUMNS)})")
    with open(file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        for col in REQUIRED:
            if col not in header:
                found = f"; found: {', '.join(header)}" if header else "; the file is empty"
                raise QBayesError(
                    f"{file}: no column '{col}'{suggest(col, header)}{found}; a manifest has the "
                    f"columns {','.join(COLUMNS)} (name optional)"
                )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    entries = []
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue  # blank line
        for col in REQUIRED:
            if not row.get(col):
                raise QBayesError(f"{file}, line {line}: empty '{col}'")
        path = Path(row["path"]).expanduser()
        entries.append(
            ModelEntry.make(path if path.is_absolute() else file.parent / path, row["family"], row.get("name") or None)
        )
    if not entries:
        raise QBayesError(f"{file}: lists no models")
    return tuple(entries)


def write_manifest(file: str | Path, entries: Sequence[ModelEntry], *, extra: Sequence[dict] = ()) -> Path:
    """Write a manifest that :func:`read_manifest` reads back (paths as given), atomically.
    ``extra`` (one dict per entry, all with the same keys) adds columns after the three
    that :func:`read_manifest` uses; it ignores them."""
    if extra and len(extra) != len(entries):
        raise ValueError("extra needs one dict per entry")
    columns = list(COLUMNS) + (list(extra[0]) if extra else [])
    with atomic_path(file) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, e in enumerate(entries):
            writer.writerow([str(e.path), e.family, e.name, *(extra[i].values() if extra else ())])
    return Path(file)


def model_entries(
    *, models: tuple[Path, ...] = (), family: str | None = None, name: str | None = None, manifest: Path | None = None
) -> tuple[ModelEntry, ...]:
    """The models of a run from the command line: every ``--model`` (with the one
    ``--family``) followed by the manifest's models. Names must be distinct."""
    if not models and manifest is None:
        raise QBayesError("no model to collect: give --model DIR (with --family) or --models FILE")
    if models and not family:
        raise QBayesError("--model needs --family (the model family recorded in the models table)")
    if family and not models:
        raise QBayesError("--family goes with --model; a --models manifest has a family column")
    if name and len(models) != 1:
        raise QBayesError("--name names a single --model; give names in a --models manifest instead")
    entries = [ModelEntry.make(m, family, name) for m in models]
    if manifest is not None:
        entries += read_manifest(manifest)
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen:
            raise QBayesError(
                f"two models are named '{e.name}' ({seen[e.name]} and {e.path}): give them "
                "distinct names (the name column of a manifest, or --name)"
            )
        seen[e.name] = e.path
    return tuple(entries)
