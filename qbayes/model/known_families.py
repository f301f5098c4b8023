"""Block designs and training tokens of well-known model families, for queries that do not
give them.

A family the fit has seen brings its own design (norm + MLP, table.arch_expr) and training
tokens. A family it has not seen would otherwise be a new design too, predicted from the
population of designs, with no training-token term (tokens are measured within designs);
and a query without ``train_tokens_b`` would get ln D drawn from the fitted population,
which holds 2022-2023 families trained on 0.2-3.5T tokens, while Llama-3 saw 15T and
Qwen2.5 18T. Yet most families people ask about next are built like one the data hold:
Llama-3, Qwen and Mistral are LLaMA-style (RMSNorm + SwiGLU), Phi-2 and Pythia have BLOOM's
and Falcon's LayerNorm + GELU.

The shipped table ``data/known_families.csv`` records each family's norm and MLP as its
Hugging Face transformers implementation builds them (column ``hf_class``), other spellings
of the family name (``aliases``), and its published training tokens in billions
(``train_tokens_b``, with ``tokens_source``), left empty where the count is not disclosed or
differs by more than ~1.5x between the family's sizes, and its vocabulary size (``vocab_size``,
the ``vocab_size`` of the family's Hugging Face config.json, with ``vocab_source``): a collapsed
model scores near an uninformed predictor over its vocabulary, ln V nats per token, which
anchors the collapse level of models with ``[collapse]`` (spec.Collapse). A fit stores the table (normalised
family name -> design, -> tokens) in its encoding, so its predictions do not change with a
later edit of the file.

Family names are matched case- and punctuation-blind (respell.key): "Llama-3", "llama3" and
"LLAMA 3" are one key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from qbayes.errors import QBayesError
from qbayes.model.table import arch_expr
from qbayes.names import key_expr
from qbayes.resources import known_families_csv, read_table

REGISTRY = known_families_csv()
COLUMNS = (
    "family",
    "aliases",
    "norm",
    "mlp",
    "hf_class",
    "train_tokens_b",
    "tokens_source",
    "vocab_size",
    "vocab_source",
)


@dataclass(frozen=True)
class KnownFamilies:
    """By normalised family name (and alias): the block design, "norm+mlp" as
    table.arch_expr spells it, the training tokens in billions where published, and the
    vocabulary size."""

    designs: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, float] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)  # the family each name and alias stands for


def load(path: Path = REGISTRY) -> KnownFamilies:
    df = read_table(path, COLUMNS, what="the table of known families")
    required = ("family", "norm", "mlp", "tokens_source", "vocab_size", "vocab_source")
    empty = df.filter(pl.any_horizontal(pl.col(*required).is_null()))
    if empty.height:
        raise QBayesError(f"{path}: rows without {', '.join(required)}: {empty['family'].to_list()}")
    df = df.with_columns(
        pl.col("train_tokens_b").cast(pl.Float64, strict=False).alias("tokens"),
        pl.col("vocab_size").cast(pl.Float64, strict=False).alias("vocab"),
    )
    bad_vocab = df.filter(~(pl.col("vocab") >= 2).fill_null(False))
    if bad_vocab.height:
        raise QBayesError(
            f"{path}: vocab_size must be a whole number of tokens >= 2; "
            f"got {bad_vocab['vocab_size'].to_list()} for {bad_vocab['family'].to_list()}"
        )
    bad = df.filter(pl.col("train_tokens_b").is_not_null() & ~(pl.col("tokens") > 0).fill_null(False))
    if bad.height:
        raise QBayesError(
            f"{path}: train_tokens_b must be a positive number of billions or empty; "
            f"got {bad['train_tokens_b'].to_list()} for {bad['family'].to_list()}"
        )
    names = (
        df.with_columns(
            arch_expr(df).alias("arch"),
            pl.concat_list(pl.col("family"), pl.col("aliases").fill_null("").str.split(";")).alias("name"),
        )
        .explode("name")
        .with_columns(pl.col("name").str.strip_chars())
        .filter(pl.col("name") != "")
        .with_columns(key_expr(pl.col("name")).alias("key"))
    )
    dup = names.filter(pl.col("key").is_duplicated())
    if dup.height:
        which = sorted(set(dup["name"].to_list()))
        raise QBayesError(
            f"{path}: family names listed more than once (case and punctuation ignored): {', '.join(which)}"
        )
    with_tokens = names.filter(pl.col("tokens").is_not_null())
    return KnownFamilies(
        designs=dict(zip(names["key"].to_list(), names["arch"].to_list())),
        tokens=dict(zip(with_tokens["key"].to_list(), with_tokens["tokens"].to_list())),
        vocab=dict(zip(names["key"].to_list(), names["vocab"].to_list())),
        families=dict(zip(names["key"].to_list(), names["family"].to_list())),
    )
