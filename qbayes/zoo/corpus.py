"""The zoo's shared tokenizer and tokenized training corpus, built once per output folder.

The tokenizer is a byte-level BPE trained on the ``train`` split of the recipe's texts
(see :mod:`qbayes.collect.texts`); every model of the zoo uses it, so perplexities of
different architectures and sizes are comparable. Token ids are cached as ``int32``
NumPy arrays next to the tokenizer, with a JSON note of their content hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qbayes.atomic import atomic_dir, atomic_path
from qbayes.collect import texts
from qbayes.collect.toymodels import build_tokenizer
from qbayes.zoo.recipe import CorpusSettings


@dataclass(frozen=True)
class Corpus:
    tokenizer_dir: Path
    ids: np.ndarray  # int32 token ids of the whole training text
    digest: str  # sha256 of the ids, 16 hex digits

    def tokenizer(self):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(self.tokenizer_dir)


def corpus_text(settings: CorpusSettings) -> str:
    return "\n\n".join(texts.load_text(name, "train") for name in settings.texts)


def prepare(settings: CorpusSettings, root: str | Path) -> Corpus:
    """Train (or reuse) the tokenizer under ``root/tokenizer`` and tokenize the corpus."""
    root = Path(root)
    tok_dir, ids_path, note_path = root / "tokenizer", root / "train_ids.npy", root / "corpus.json"
    wanted = {"texts": list(settings.texts), "vocab": settings.vocab}
    if note_path.is_file() and ids_path.is_file() and tok_dir.is_dir():
        note = json.loads(note_path.read_text())
        if note.get("settings") == wanted:
            return Corpus(tok_dir, np.load(ids_path), note["ids_sha256"])
    text = corpus_text(settings)
    tokenizer = build_tokenizer(text, settings.vocab)
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32)
    digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(tok_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    with atomic_path(ids_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, ids)
    note = {"settings": wanted, "chars": len(text), "tokens": int(ids.size), "ids_sha256": digest}
    with atomic_path(note_path) as tmp:
        Path(tmp).write_text(json.dumps(note, indent=2))
    return Corpus(tok_dir, ids, digest)
