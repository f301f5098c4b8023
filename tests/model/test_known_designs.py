"""The shipped table of known families' block designs (data/block_designs.csv)."""

from __future__ import annotations

import polars as pl
import pytest

from helpers import SHIPPED_DB
from qbayes.db import store
from qbayes.errors import QBayesError
from qbayes.model import known_designs
from qbayes.model.design import arch_expr
from qbayes.model.respell import key, key_expr


def _lookup(designs: dict[str, str], family: str) -> str | None:
    return designs.get(key(family))


def test_families_match_whatever_their_spelling():
    designs = known_designs.load()
    for name in ("Llama-3", "llama3", "LLAMA 3", "Meta-Llama-3.1", "Qwen2.5", "qwen-2.5", "Mistral"):
        assert _lookup(designs, name) == "rmsnorm+swiglu", name
    assert _lookup(designs, "Phi-2") == "layernorm+gelu"  # BLOOM's and Falcon's design
    assert _lookup(designs, "Gemma-2") == "rmsnorm+geglu"  # a design no shipped family has
    assert _lookup(designs, "OPT") == "layernorm+relu"
    assert _lookup(designs, "Mamba") is None


def test_table_agrees_with_the_shipped_models_table():
    """A family in both must have one design, or a fit would predict it as one design and a
    query about it as another."""
    designs = known_designs.load()
    models = store.load(SHIPPED_DB).models
    db = (models.select("family", arch_expr(models).alias("arch")).drop_nulls().unique()
          .with_columns(key_expr(pl.col("family")).alias("key")))
    both = db.filter(pl.col("key").is_in(list(designs)))
    assert both.height >= 6  # OPT, BLOOM, LLaMA-1, Llama-2, Falcon, Mistral, Mixtral
    for fam, arch, key in both.iter_rows():
        assert designs[key] == arch, fam


@pytest.mark.parametrize("text, message", [
    ("family,aliases,norm,mlp,hf_class\nLlama-3,,RMSNorm,SwiGLU,x\nLLaMA 3,,RMSNorm,SwiGLU,y\n",
     "listed more than once.*LLaMA 3, Llama-3"),
    ("family,aliases,norm,mlp,hf_class\nQwen2,Qwen-1,RMSNorm,SwiGLU,x\nQwen1,,RMSNorm,SwiGLU,y\n",
     "listed more than once.*Qwen-1, Qwen1"),
    ("family,norm,mlp\nQwen2,RMSNorm,SwiGLU\n", "missing column.*aliases, hf_class"),
    ("family,aliases,norm,mlp,hf_class\nQwen2,,,SwiGLU,x\n", "without family, norm or mlp.*Qwen2"),
])
def test_a_broken_table_is_refused(tmp_path, text, message):
    path = tmp_path / "designs.csv"
    path.write_text(text)
    with pytest.raises(QBayesError, match=message):
        known_designs.load(path)


def test_a_missing_table_is_named(tmp_path):
    with pytest.raises(QBayesError, match="absent.csv: the table of known block designs is missing"):
        known_designs.load(tmp_path / "absent.csv")
