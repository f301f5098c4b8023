"""The shipped table of known families' block designs and training tokens
(data/known_families.csv)."""

from __future__ import annotations

import polars as pl
import pytest

from qbayes.db import store
from qbayes.errors import QBayesError
from qbayes.model import known_families
from qbayes.model.table import arch_expr
from qbayes.names import key, key_expr

from helpers import SHIPPED_DB

HEADER = "family,aliases,norm,mlp,hf_class,train_tokens_b,tokens_source,vocab_size,vocab_source\n"


def test_families_match_whatever_their_spelling():
    known = known_families.load()
    for name in ("Llama-3", "llama3", "LLAMA 3", "Meta-Llama-3.1", "Qwen2.5", "qwen-2.5", "Mistral"):
        assert known.designs.get(key(name)) == "rmsnorm+swiglu", name
    assert known.designs.get(key("Phi-2")) == "layernorm+gelu"  # BLOOM's and Falcon's design
    assert known.designs.get(key("Gemma-2")) == "rmsnorm+geglu"  # a design no shipped family has
    assert known.designs.get(key("OPT")) == "layernorm+relu"
    assert key("Mamba") not in known.designs


def test_training_tokens_where_published_and_alike_across_sizes():
    tokens = known_families.load().tokens
    assert tokens[key("Meta-Llama-3.1")] == tokens[key("Llama-3")] == 15000.0
    assert tokens[key("Llama-3.2")] == 9000.0  # its own row: the 1B and 3B saw 9T, not 15T
    assert tokens[key("Qwen2.5")] == 18000.0
    for undisclosed_or_varied in ("Mistral", "Gemma-2", "Falcon", "Vicuna"):
        assert key(undisclosed_or_varied) not in tokens, undisclosed_or_varied


def test_vocabulary_sizes_of_every_family_and_its_aliases():
    """Every known family has a vocabulary size (the collapse level's anchor); aliases share it."""
    known = known_families.load()
    assert set(known.vocab) == set(known.designs)
    assert known.vocab[key("Meta-Llama-3.1")] == known.vocab[key("Llama-3")] == 128256
    assert known.vocab[key("LLaMA-1")] == known.vocab[key("Llama-2")] == known.vocab[key("Mistral")] == 32000
    assert known.vocab[key("Qwen3")] == known.vocab[key("Qwen2.5")] == 151936
    assert known.vocab[key("Gemma-2")] == 256000
    assert known.vocab[key("Phi")] == known.vocab[key("Phi-2")]  # the models table's family name for Phi-2


def test_models_table_vocabulary_is_the_known_familys():
    """The shipped models table's vocab_size comes from the family's row of the known table
    (published models) or the zoo's tokenizer; every published model has one."""
    known = known_families.load()
    models = store.load(SHIPPED_DB).models
    assert models.get_column("vocab_size").null_count() == 0
    for r in models.iter_rows(named=True):
        expected = 2048 if r["family"].startswith("zoo-") else known.vocab[key(r["family"])]
        assert r["vocab_size"] == expected, r["model"]


def test_table_agrees_with_the_shipped_models_table():
    """A family in both must have one design, or a fit would predict it as one design and a
    query about it as another; its tokens, where the table gives them, lie within the range
    of its models'."""
    known = known_families.load()
    models = store.load(SHIPPED_DB).models
    db = (
        models.group_by("family")
        .agg(
            arch_expr(models).drop_nulls().unique().alias("arch"),
            pl.col("train_tokens_b").min().alias("lo"),
            pl.col("train_tokens_b").max().alias("hi"),
        )
        .with_columns(key_expr(pl.col("family")).alias("key"))
    )
    both = db.filter(pl.col("key").is_in(list(known.designs)))
    assert both.height >= 6  # OPT, BLOOM, LLaMA-1, Llama-2, Falcon, Mistral, Mixtral
    with_tokens = 0
    for r in both.iter_rows(named=True):
        assert r["arch"] == [known.designs[r["key"]]], r["family"]
        if r["key"] in known.tokens and r["lo"] is not None:
            assert r["lo"] <= known.tokens[r["key"]] <= r["hi"], r["family"]
            with_tokens += 1
    assert with_tokens >= 4  # OPT, BLOOM, LLaMA-1, Llama-2


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "Llama-3,,RMSNorm,SwiGLU,x,15000,s,128256,v\nLLaMA 3,,RMSNorm,SwiGLU,y,,s,128256,v\n",
            "listed more than once.*LLaMA 3, Llama-3",
        ),
        (
            "Qwen2,Qwen-1,RMSNorm,SwiGLU,x,,s,151936,v\nQwen1,,RMSNorm,SwiGLU,y,,s,151936,v\n",
            "listed more than once.*Qwen-1, Qwen1",
        ),
        ("Qwen2,,,SwiGLU,x,,s,151936,v\n", "without family, norm, mlp, tokens_source, vocab_size, vocab_source.*Qwen2"),
        ("Qwen2,,RMSNorm,SwiGLU,x,7000,,151936,v\n", "without family, norm.*tokens_source.*Qwen2"),
        ("Qwen2,,RMSNorm,SwiGLU,x,7000,s,,v\n", "without family, norm.*vocab_size.*Qwen2"),
        (
            "Qwen2,,RMSNorm,SwiGLU,x,7T,s,151936,v\nQwen3,,RMSNorm,SwiGLU,x,-1,s,151936,v\n",
            r"train_tokens_b must be a positive number.*\['7T', '-1'\] for \['Qwen2', 'Qwen3'\]",
        ),
        (
            "Qwen2,,RMSNorm,SwiGLU,x,7000,s,150k,v\nQwen3,,RMSNorm,SwiGLU,x,36000,s,1,v\n",
            r"vocab_size must be a whole number.*\['150k', '1'\] for \['Qwen2', 'Qwen3'\]",
        ),
    ],
)
def test_a_broken_table_is_refused(tmp_path, rows, message):
    path = tmp_path / "families.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(QBayesError, match=message):
        known_families.load(path)


def test_a_table_without_token_columns_is_refused(tmp_path):
    path = tmp_path / "families.csv"
    path.write_text("family,aliases,norm,mlp,hf_class\nQwen2,,RMSNorm,SwiGLU,x\n")
    with pytest.raises(QBayesError, match="missing column.*train_tokens_b, tokens_source"):
        known_families.load(path)


def test_a_missing_table_is_named(tmp_path):
    with pytest.raises(QBayesError, match="absent.csv: the table of known families is missing"):
        known_families.load(tmp_path / "absent.csv")


def test_fit_refuses_a_broken_table_and_writes_no_fit(tmp_path, cli, monkeypatch):
    """The table is read when a fit encodes its data, before any sampling: a bad token count
    stops `qbayes fit` with the message and no fit file."""
    path = tmp_path / "families.csv"
    path.write_text(HEADER + "Qwen2,,RMSNorm,SwiGLU,x,seven,s,151936,v\n")
    monkeypatch.setattr(known_families.load, "__defaults__", (path,))
    out = tmp_path / "fit.nc"
    r = cli("fit", "--out", out, "--draws", 10, "--tune", 10, "--chains", 1)
    assert r.code == 2, r.err
    assert "train_tokens_b must be a positive number of billions or empty" in r.err and "seven" in r.err
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
