"""Token windows of evaluation and calibration texts.

Two protocols, chosen by the text:

* the built-in texts (:mod:`qbayes.collect.texts`): the first ``count`` windows of
  ``seq_len`` tokens of the text's evaluation or calibration part, tokenized without
  special tokens (how the shipped database's collected rows were measured);
* the published sets and local files (:mod:`qbayes.collect.corpora`), as the GPTQ code
  (IST-DASLab/gptq ``datautils.py``, also used by AWQ and OmniQuant) does, with the
  tokenizer's special tokens added as its ``tokenizer(text)`` call adds them:

  - evaluation, WikiText-2 / PTB / local files: the rows joined with ``"\\n\\n"``,
    tokenized at once and cut into non-overlapping windows of ``seq_len``, all of them
    (``count`` caps them);
  - evaluation, C4: 256 windows, each from a document drawn at random (Python's
    ``random`` seeded with 0, whatever the run's seed) among those longer than
    ``seq_len`` tokens, at a random offset;
  - calibration: ``count`` windows at random offsets (seeded with the run's seed) of the
    joined text, or for C4 and the Pile of random documents as for C4's evaluation.

GPTQ loads the slow (sentencepiece) tokenizer where we load the model's default, usually
the fast one; the two can split a few strings differently.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import torch

from qbayes.collect import corpora, texts
from qbayes.collect.corpora import TextFile
from qbayes.collect.evaluate import make_windows
from qbayes.errors import QBayesError

C4_EVAL_WINDOWS = 256
C4_EVAL_SEED = 0
JOIN = "\n\n"


def is_builtin(name: str) -> bool:
    return name in texts.SOURCES


def windows(
    tokenizer,
    name: str,
    purpose: str,
    *,
    seq_len: int,
    count: int | None,
    seed: int = 0,
    files: Sequence[TextFile] = (),
) -> torch.Tensor:
    """``[n, seq_len]`` token ids of text ``name`` for ``purpose`` (eval or calib); at most
    ``count`` windows (None: the protocol's own number; calibration needs a count)."""
    what = "evaluation" if purpose == "eval" else "calibration"
    if count is not None and count < 1:
        raise QBayesError(f"empty {what} set '{name}': 0 windows of {seq_len} tokens asked for")
    if is_builtin(name):
        split = "eval" if purpose == "eval" else "calib"
        ids = texts.tokens(tokenizer, name, split, None if count is None else count * seq_len)
        if len(ids) < seq_len:
            raise QBayesError(f"empty {what} set '{name}': {len(ids)} tokens, fewer than one window of {seq_len}")
        return make_windows(ids, seq_len)
    c = corpora.CORPORA[name]
    rows = load_rows(text_file(name, purpose, files))
    if purpose == "eval" and not c.sampled:
        return _contiguous(_joined_ids(tokenizer, rows), seq_len, count, name, what)
    if purpose == "eval":
        n = C4_EVAL_WINDOWS if count is None else min(count, C4_EVAL_WINDOWS)
        return sample_documents(tokenizer, rows, seq_len, n, random.Random(C4_EVAL_SEED), name, what)
    if count is None:
        raise ValueError("calibration windows need a count")
    rng = random.Random(seed)
    if c.sampled:
        return sample_documents(tokenizer, rows, seq_len, count, rng, name, what)
    ids = _joined_ids(tokenizer, rows)
    if len(ids) <= seq_len:
        raise QBayesError(
            f"empty {what} set '{name}': {len(ids)} tokens, fewer than one window of {seq_len} and a token to spare"
        )
    starts = [rng.randint(0, len(ids) - seq_len - 1) for _ in range(count)]
    return torch.tensor([ids[s : s + seq_len] for s in starts], dtype=torch.long)


def text_file(name: str, purpose: str, files: Sequence[TextFile] = ()) -> TextFile:
    """The local file holding set ``name`` for ``purpose``: one the run names, else the
    set's hub file if it is in the local hub cache."""
    for f in files:
        if f.name == name and f.purpose == purpose:
            return f
    hub = corpora.CORPORA[name].hub_file(purpose)
    if hub is None:
        option = "--eval-text" if purpose == "eval" else "--calib-text"
        raise QBayesError(f"'{name}' has no hub source: give its text with {option} {name}=PATH")
    return TextFile(purpose, name, corpora.hub_path(hub, download=False), hub.describe())


@functools.lru_cache(maxsize=8)
def load_rows(text: TextFile) -> corpora.Rows:
    return corpora.read_rows(text)


@functools.lru_cache(maxsize=4)
def _joined_ids(tokenizer, rows: corpora.Rows) -> tuple[int, ...]:
    return tuple(tokenizer(JOIN.join(rows.all()))["input_ids"])


def _contiguous(ids: Sequence[int], seq_len: int, count: int | None, name: str, what: str) -> torch.Tensor:
    n = len(ids) // seq_len if count is None else min(count, len(ids) // seq_len)
    if n == 0:
        raise QBayesError(f"empty {what} set '{name}': {len(ids)} tokens, fewer than one window of {seq_len}")
    return torch.tensor(list(ids[: n * seq_len]), dtype=torch.long).view(n, seq_len)


def sample_documents(
    tokenizer, rows: Sequence[str], seq_len: int, n: int, rng: random.Random, name: str, what: str
) -> torch.Tensor:
    """``n`` windows, each from a document drawn with ``rng`` until one is longer than
    ``seq_len`` tokens, at an offset drawn with ``rng`` (GPTQ's ``get_c4``; it accepts a
    document of exactly ``seq_len`` tokens and then fails drawing the offset, so the draws
    agree with it wherever it runs)."""
    lengths: dict[int, list[int]] = {}
    short: set[int] = set()
    out = []
    for _ in range(n):
        while True:
            i = rng.randint(0, len(rows) - 1)
            if i not in lengths:
                lengths[i] = tokenizer(rows[i])["input_ids"]
            ids = lengths[i]
            if len(ids) > seq_len:
                break
            short.add(i)
            if len(short) == len(rows):
                raise QBayesError(
                    f"empty {what} set '{name}': none of its {len(rows)} documents is longer than {seq_len} tokens"
                )
        j = rng.randint(0, len(ids) - seq_len - 1)
        out.append(ids[j : j + seq_len])
    return torch.tensor(out, dtype=torch.long)
