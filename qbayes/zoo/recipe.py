"""The zoo recipe: ``collectors/zoo.toml`` parsed into frozen dataclasses.

A recipe names the architectures, the sizes (width, depth, heads, MLP width), the corpus
and tokenizer, the optimiser settings and the token budgets at which checkpoints are
saved. Every (architecture, size) pair is one training *run*; each run saves one
checkpoint per budget. Unknown keys and wrong types are errors naming the file and key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from qbayes.collect.grid import build_table, read_toml
from qbayes.errors import QBayesError, unknown

ARCHS = ("llama", "gpt2", "opt")
FAMILY_PREFIX = "zoo-"  # database family of a run: zoo-<arch>


@dataclass(frozen=True)
class CorpusSettings:
    texts: tuple[str, ...] = ("shakespeare", "bible")  # train split of each
    vocab: int = 2048


@dataclass(frozen=True)
class TrainSettings:
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    budgets_m: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # millions of tokens
    loss_window: int = 20

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size

    def budget_steps(self) -> list[int]:
        """Optimizer steps after which each budget's checkpoint is saved."""
        return [max(1, round(b * 1e6 / self.tokens_per_step)) for b in self.budgets_m]


@dataclass(frozen=True)
class SizeSpec:
    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int


@dataclass(frozen=True)
class Run:
    """One training run: an architecture at a size."""

    arch: str
    size: SizeSpec

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.size.name}"

    @property
    def family(self) -> str:
        return FAMILY_PREFIX + self.arch


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    archs: tuple[str, ...]
    sizes: tuple[SizeSpec, ...]
    corpus: CorpusSettings
    training: TrainSettings

    def runs(self) -> list[Run]:
        return [Run(a, s) for a in self.archs for s in self.sizes]

    def digest(self) -> str:
        """Hash of everything that changes the trained weights (not the recipe's name)."""
        payload = {k: v for k, v in asdict(self).items() if k != "name"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_name(run: Run, budget_m: float) -> str:
    """Model name of a checkpoint in the database, e.g. ``zoo-llama-s2-t0.5M``."""
    return f"{FAMILY_PREFIX}{run.name}-t{budget_m:g}M"


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    return recipe_from_dict(read_toml(path, "zoo recipe"), name=path.stem, where=str(path))


def recipe_from_dict(data: dict, *, name: str, where: str) -> Recipe:
    known = ("seed", "archs", "sizes", "corpus", "training")
    for key in data:
        if key not in known:
            raise QBayesError(f"{where}: {unknown('key', key, known)}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise QBayesError(f"{where}: seed must be an integer")
    archs = tuple(data.get("archs", ARCHS))
    for arch in archs:
        if arch not in ARCHS:
            raise QBayesError(f"{where}: {unknown('architecture', arch, ARCHS)}")
    raw_sizes = data.get("sizes", [])
    if not isinstance(raw_sizes, list) or not raw_sizes:
        raise QBayesError(f"{where}: needs at least one [[sizes]] table")
    sizes = tuple(build_table(SizeSpec, s, f"{where} [[sizes]] #{i + 1}") for i, s in enumerate(raw_sizes))
    if len({s.name for s in sizes}) != len(sizes):
        raise QBayesError(f"{where}: size names must be unique")
    for s in sizes:
        if min(s.hidden, s.layers, s.heads, s.intermediate) <= 0 or s.hidden % s.heads:
            raise QBayesError(f"{where} size '{s.name}': dimensions must be positive and hidden divisible by heads")
    corpus = build_table(CorpusSettings, data.get("corpus", {}), f"{where} [corpus]")
    training = build_table(TrainSettings, data.get("training", {}), f"{where} [training]")
    budgets = training.budgets_m
    if not budgets or any(b <= 0 for b in budgets) or list(budgets) != sorted(set(budgets)):
        raise QBayesError(f"{where} [training]: budgets_m must be positive and strictly increasing")
    if min(training.seq_len, training.batch_size, training.warmup_steps, training.loss_window) <= 0:
        raise QBayesError(f"{where} [training]: seq_len, batch_size, warmup_steps and loss_window must be positive")
    return Recipe(name=name, seed=seed, archs=archs, sizes=sizes, corpus=corpus, training=training)
