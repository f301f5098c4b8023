"""The published evaluation and calibration sets (WikiText-2, C4, PTB) and local text files.

Each set is read through Hugging Face ``datasets`` from one of:

* a local file or directory the user names (``--eval-text NAME=PATH``,
  ``--calib-text NAME=PATH``): parquet, JSON lines (``.jsonl``, ``.json``, optionally
  ``.gz``/``.bz2``/``.xz``/``.zst``), plain text (read line by line, as the set's own hub
  builder does), or a directory written by ``Dataset.save_to_disk`` (the set's split is
  taken from a ``DatasetDict``);
* the file of the set's Hugging Face hub repository, from the local hub cache
  (``HF_HUB_CACHE``, where ``datasets.load_dataset`` leaves what it downloads), and
  fetched into that cache only when the run allows it (``--download``). Nothing else is
  ever fetched.

A set's rows are its documents: WikiText-2's lines (as the hub's parquet files hold
them: a line with its newline, a blank line as ""), C4's documents, PTB's sentences
(stripped lines). :mod:`qbayes.collect.protocol` turns rows into token windows the way
the GPTQ code does.

Calibration must not see the evaluation text: :func:`overlap` finds rows of at least
``OVERLAP_MIN_CHARS`` characters that two texts share.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qbayes.errors import QBayesError, unknown

OVERLAP_MIN_CHARS = 64  # shorter rows (headings, short sentences) may recur in disjoint texts
PARQUET = (".parquet",)
JSON = (".jsonl", ".json", ".ndjson")
COMPRESSED = ("", ".gz", ".bz2", ".xz", ".zst")
PURPOSES = ("eval", "calib")


@dataclass(frozen=True)
class HubFile:
    """One data file of a dataset repository on the Hugging Face hub."""

    repo: str
    filename: str
    revision: str | None = None

    def describe(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://datasets/{self.repo}{rev}/{self.filename}"


@dataclass(frozen=True)
class Corpus:
    """How a named set is read: its text column, line rule, window rule and hub files."""

    name: str
    column: str  # the text field of its rows
    lines: str  # plain-text files: "keep" (line with its newline, blank as "") or "strip"
    sampled: bool  # evaluation windows drawn from documents (C4) rather than cut from the joined text
    splits: dict[str, str]  # purpose -> split of a saved DatasetDict / of the hub dataset
    hub: dict[str, HubFile]  # purpose -> hub file (none: local files only)
    about: str

    def hub_file(self, purpose: str) -> HubFile | None:
        return self.hub.get(purpose)


CORPORA: dict[str, Corpus] = {
    "wikitext2": Corpus(
        "wikitext2",
        "text",
        "keep",
        False,
        {"eval": "test", "calib": "train"},
        {
            "eval": HubFile("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet"),
            "calib": HubFile("Salesforce/wikitext", "wikitext-2-raw-v1/train-00000-of-00001.parquet"),
        },
        "WikiText-2 (raw, v1): evaluation on the test split, calibration on the train split; CC BY-SA 3.0",
    ),
    "c4": Corpus(
        "c4",
        "text",
        "keep",
        True,
        {"eval": "validation", "calib": "train"},
        {
            "eval": HubFile("allenai/c4", "en/c4-validation.00000-of-00008.json.gz"),
            "calib": HubFile("allenai/c4", "en/c4-train.00000-of-01024.json.gz"),
        },
        "C4 (en): evaluation on the first validation shard, calibration on the first train shard; ODC-BY",
    ),
    "ptb": Corpus(
        "ptb",
        "sentence",
        "strip",
        False,
        {"eval": "validation", "calib": "train"},
        {
            "eval": HubFile(
                "ptb-text-only/ptb_text_only", "penn_treebank/validation/0000.parquet", "refs/convert/parquet"
            ),
            "calib": HubFile("ptb-text-only/ptb_text_only", "penn_treebank/train/0000.parquet", "refs/convert/parquet"),
        },
        "Penn Treebank (text only): evaluation on the validation split, as GPTQ; LDC licence",
    ),
    "pile": Corpus(
        "pile",
        "text",
        "keep",
        True,
        {"calib": "validation"},
        {},
        "The Pile: calibration from a local file only (--calib-text pile=PATH)",
    ),
}


@dataclass(frozen=True)
class TextFile:
    """A local file (or saved dataset directory) holding the text of set ``name`` for
    ``purpose`` (eval or calib). ``origin`` says where it came from, for the row notes."""

    purpose: str
    name: str
    path: Path
    origin: str = "local file"


def corpus(name: str) -> Corpus | None:
    return CORPORA.get(name)


def parse_text_option(value: str, purpose: str, allowed: Sequence[str]) -> TextFile:
    """``NAME=PATH`` from ``--eval-text``/``--calib-text``."""
    option = "--eval-text" if purpose == "eval" else "--calib-text"
    name, sep, path = value.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise QBayesError(f"{option} {value!r}: expected NAME=PATH (e.g. {option} wikitext2=wiki.test.parquet)")
    if name not in allowed:
        raise QBayesError(f"{option}: {unknown('set', name, allowed)}")
    if name not in CORPORA or purpose not in CORPORA[name].splits:
        what = "evaluation" if purpose == "eval" else "calibration"
        files = sorted(n for n, c in CORPORA.items() if purpose in c.splits)
        raise QBayesError(
            f"{option}: '{name}' is a built-in {what} text; a file can give the text of {', '.join(files)}"
        )
    return TextFile(purpose, name, Path(path).expanduser())


# --- the hub -------------------------------------------------------------------------


def hub_path(ref: HubFile, *, download: bool) -> Path:
    """The local path of a hub file: from the hub cache, or fetched into it when
    ``download``; a QBayesError naming what is missing otherwise."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        with _online(download):
            return Path(
                hf_hub_download(
                    ref.repo, ref.filename, repo_type="dataset", revision=ref.revision, local_files_only=not download
                )
            )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        if download:
            raise QBayesError(f"{ref.describe()} could not be fetched ({type(exc).__name__}: {exc})") from None
        raise QBayesError(f"{ref.describe()} is not in the local Hugging Face cache") from None
    except (HfHubHTTPError, OSError) as exc:
        raise QBayesError(f"{ref.describe()} could not be fetched ({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def _online(download: bool) -> Iterator[None]:
    """Lift huggingface_hub's offline switch for an asked-for download (collection sets
    ``HF_HUB_OFFLINE`` so that nothing else reaches the hub)."""
    if not download:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


# --- reading rows --------------------------------------------------------------------


class Rows(Sequence):
    """The text rows of one set, read lazily from an Arrow-backed ``datasets.Dataset``."""

    def __init__(self, dataset, column: str, lines: str | None):
        self._ds = dataset
        self._column = column
        self._lines = lines  # line rule applied to plain-text rows (None: rows as stored)

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._fix(self._ds[i][self._column])

    def _fix(self, row) -> str:
        row = row or ""
        if self._lines == "strip":
            return row.strip()
        if self._lines == "keep":
            return row if row.strip() else ""
        return row

    def all(self) -> list[str]:
        return [self._fix(r) for r in self._ds[self._column]]

    def batches(self, size: int = 10_000) -> Iterator[list[str]]:
        for start in range(0, len(self), size):
            yield [self._fix(r) for r in self._ds[start : start + size][self._column]]


def read_rows(text: TextFile) -> Rows:
    """The rows of a local text file or saved dataset, or a QBayesError saying why not."""
    c = CORPORA[text.name]
    path = text.path
    where = str(path)
    if not path.exists():
        raise QBayesError(f"{where}: no such file or directory")
    if path.is_file() and not os.access(path, os.R_OK):
        raise QBayesError(f"{where}: not readable")
    if path.is_file() and path.stat().st_size == 0:
        raise QBayesError(f"{where}: the file is empty")
    try:
        import datasets
    except ImportError as exc:
        raise QBayesError(
            f"{where}: reading it needs the datasets package ({exc}); "
            "install the collect extra: pip install -e '.[collect]'"
        ) from None
    datasets.disable_progress_bars()
    lines = None
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                split = c.splits[text.purpose]
                if split not in ds:
                    raise QBayesError(f"{where}: the saved dataset has no '{split}' split (it has {', '.join(ds)})")
                ds = ds[split]
        else:
            kind, lines = _file_kind(path.name), None
            if kind == "text":
                lines = c.lines
                ds = datasets.load_dataset("text", data_files=str(path), split="train", keep_linebreaks=True)
            else:
                ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except QBayesError:
        raise
    except Exception as exc:  # datasets and pyarrow raise many types for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise QBayesError(
            f"{where}: cannot be read as a {_file_kind(path.name) if path.is_file() else 'saved'} "
            f"dataset ({type(exc).__name__}: {first[:300]})"
        ) from None
    column = "text" if lines else _text_column(ds, c.column, where)
    rows = Rows(ds, column, lines)
    if not any(r.strip() for batch in rows.batches() for r in batch):
        raise QBayesError(f"{where}: holds no text ({len(rows)} empty rows)")
    return rows


def _file_kind(name: str) -> str:
    lower = name.lower()
    for comp in COMPRESSED:
        if comp and lower.endswith(comp):
            lower = lower[: -len(comp)]
            break
    if lower.endswith(PARQUET):
        return "parquet"
    if lower.endswith(JSON):
        return "json"
    return "text"


def _text_column(ds, wanted: str, where: str) -> str:
    strings = [n for n, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    if wanted in strings:
        return wanted
    if len(strings) == 1:
        return strings[0]
    raise QBayesError(f"{where}: no text column '{wanted}' (columns: {', '.join(ds.column_names) or 'none'})")


# --- overlap -------------------------------------------------------------------------


def _passages(rows: Sequence[str] | Rows) -> Iterator[str]:
    """The lines of a text's rows that are long enough to identify a passage."""
    batches = rows.batches() if isinstance(rows, Rows) else [rows]
    for batch in batches:
        for row in batch:
            for line in row.splitlines():
                line = line.strip()
                if len(line) >= OVERLAP_MIN_CHARS:
                    yield line


def _digest(line: str) -> bytes:
    return hashlib.blake2b(line.encode("utf-8"), digest_size=16).digest()


def overlap(a: Sequence[str] | Rows, b: Sequence[str] | Rows) -> tuple[int, str | None]:
    """How many long lines (``OVERLAP_MIN_CHARS`` or more, trimmed) of text ``b`` also
    occur in text ``a``, and the start of one of them."""
    seen = {_digest(line) for line in _passages(a)}
    shared, example = 0, None
    for line in _passages(b):
        if _digest(line) in seen:
            shared += 1
            example = example or line[:60]
    return shared, example
