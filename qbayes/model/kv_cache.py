"""KV-cache memory of well-known models, for ``qbayes choose --context``.

An fp16 KV cache holds one key and one value vector per layer, key-value head and token of
context: 2 x layers x kv_heads x head_dim x context x 2 bytes. The shapes are in
``data/model_shapes.csv``, one row per model with its source (paper table or the model's
``config.json``). A candidate is matched by family (any name or alias of it in
``data/known_families.csv``, case- and punctuation-blind) and the nearest size of that
family within a factor :data:`SIZE_TOLERANCE` of its parameter count: "Qwen2.5" at 7B is
Qwen2.5-7B (7.61B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from qbayes.errors import QBayesError
from qbayes.model import known_families
from qbayes.names import key
from qbayes.resources import model_shapes_csv, read_table

COLUMNS = ("family", "model", "params_b", "layers", "kv_heads", "head_dim", "source")
BYTES_FP16 = 2
SIZE_TOLERANCE = 1.25  # a candidate of 7B matches a model of 5.6B to 8.75B


@dataclass(frozen=True)
class Shape:
    """What the KV cache of one model depends on."""

    family: str
    model: str
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    source: str

    def kv_cache_gb(self, context: int, *, bytes_per_value: int = BYTES_FP16) -> float:
        """Keys and values of ``context`` tokens, GB (10^9 bytes, as the weights)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * context * bytes_per_value / 1e9


@dataclass(frozen=True)
class Shapes:
    """The table's shapes by family, and the family each family name or alias stands for."""

    by_family: dict[str, tuple[Shape, ...]]
    families: dict[str, str]

    def find(self, family: str, params_b: float) -> Shape | None:
        """The shape of ``family``'s size nearest ``params_b`` (within SIZE_TOLERANCE), or None."""
        sizes = self.by_family.get(self.families.get(key(family), ""), ())
        if not sizes or not params_b > 0:
            return None
        nearest = min(sizes, key=lambda s: abs(math.log(s.params_b / params_b)))
        return nearest if abs(math.log(nearest.params_b / params_b)) <= math.log(SIZE_TOLERANCE) else None

    def why_not(self, family: str, params_b: float) -> str:
        """Why :meth:`find` has no shape for this candidate."""
        sizes = self.by_family.get(self.families.get(key(family), ""), ())
        if not sizes:
            return f"no shapes of family {family}"
        known = ", ".join(f"{s.params_b:g}B" for s in sizes)
        return f"no {family} model of about {params_b:g}B parameters (sizes it has: {known})"


def load(path: Path | None = None) -> Shapes:
    """Read and check the table (default: the shipped ``data/model_shapes.csv``)."""
    path = Path(path) if path is not None else model_shapes_csv()
    df = read_table(path, COLUMNS, what="the table of model shapes")
    families = known_families.load().families
    by_family: dict[str, list[Shape]] = {}
    problems = []
    for i, r in enumerate(df.iter_rows(named=True), start=2):
        try:
            shape = Shape(
                family=r["family"],
                model=r["model"],
                params_b=float(r["params_b"]),
                layers=int(r["layers"]),
                kv_heads=int(r["kv_heads"]),
                head_dim=int(r["head_dim"]),
                source=r["source"] or "",
            )
        except (TypeError, ValueError):
            problems.append(f"row {i}: params_b must be a number and layers, kv_heads, head_dim integers")
            continue
        if min(shape.params_b, shape.layers, shape.kv_heads, shape.head_dim) <= 0 or not shape.source:
            problems.append(f"row {i}: sizes must be positive and the source given")
        if families.get(key(shape.family or "")) != shape.family:
            problems.append(f"row {i}: family '{shape.family}' is not a family of data/known_families.csv")
        by_family.setdefault(shape.family, []).append(shape)
    if problems:
        raise QBayesError(f"{path}: " + "; ".join(problems))
    return Shapes(
        by_family={f: tuple(sorted(s, key=lambda x: x.params_b)) for f, s in by_family.items()}, families=families
    )


def kv_cache_gb(candidates: pl.DataFrame, context: int, *, shapes: Shapes | None = None) -> np.ndarray:
    """Per candidate (family, model, params_b), the fp16 KV cache of ``context`` tokens in
    GB; raises QBayesError naming every candidate whose shape the table lacks."""
    if context < 1:
        raise QBayesError(f"--context must be at least 1 token, got {context}")
    shapes = shapes or load()
    out, problems = [], []
    for r in candidates.select("family", "model", "params_b").iter_rows(named=True):
        shape = shapes.find(r["family"], r["params_b"])
        if shape is None:
            problems.append(f"{r['model']}: {shapes.why_not(r['family'], r['params_b'])}")
            continue
        out.append(shape.kv_cache_gb(context))
    if problems:
        raise QBayesError(
            "--context needs each candidate's layers, key-value heads and head size, and "
            f"data/model_shapes.csv has {'; '.join(problems)}. Leave out --context and give the "
            "KV cache (and any other memory) with --overhead-gb"
        )
    return np.array(out, dtype=float)
