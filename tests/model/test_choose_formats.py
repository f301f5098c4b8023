"""``qbayes choose`` over named formats, with memory beyond the weights: a fixed overhead
and the KV cache of a context length (qbayes.model.kv_cache, data/model_shapes.csv)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.db import named_formats
from qbayes.errors import QBayesError
from qbayes.model import kv_cache
from qbayes.model.choose import choose, options
from qbayes.model.predict import Predictor

from helpers import ROOT

OPT = pl.DataFrame(
    {
        "family": ["OPT", "OPT"],
        "model": ["OPT-13B", "OPT-1.3B"],
        "params_b": [13.0, 1.3],
        "fp16_ppl": [10.13, 14.62],
        "train_tokens_b": [180.0, 180.0],
    }
)
CANDIDATES = (
    "--family",
    "OPT",
    "--train-tokens-b",
    180,
    "--candidate",
    "OPT-13B:13:10.13",
    "--candidate",
    "OPT-1.3B:1.3:14.62",
    "--draws",
    200,
)


# --- options -----------------------------------------------------------------------------


def test_named_formats_are_options_with_their_bits_per_weight():
    fmts = named_formats.lookup_all(["Q4_K_M", "int4-g128"])
    q = options(OPT, methods=("GPTQ", "AWQ"), formats=fmts)
    # Q4_K_M fixes its method; the label is one option per method
    assert q.height == 2 * (1 + 2)
    first = q.filter(pl.col("model") == "OPT-13B")
    assert first["format"].to_list() == ["Q4_K_M", "int4-g128", "int4-g128"]
    assert first["method"].to_list() == ["llama.cpp-kquant", "GPTQ", "AWQ"]
    assert first["bits"][0] == fmts[0].bits_per_weight
    label = options(OPT, methods=("GPTQ",), w_bits=(4.0,), group_sizes=(128,))
    assert first["bits"][1] == label["bits"][0]  # a label is its configuration spelled out
    assert options(OPT, formats=fmts[1:])["method"].unique().to_list() == [named_formats.DEFAULT_METHOD]


def test_formats_beside_the_grid_and_nothing_refused():
    q = options(OPT, methods=("RTN",), w_bits=(3.0, 4.0), group_sizes=(128,), formats=named_formats.lookup_all(["nf4"]))
    assert q.height == 2 * (2 + 1) and q["format"].null_count() == 2 * 2
    with pytest.raises(QBayesError, match="choose needs formats, or methods x weight bit-widths x group sizes"):
        options(OPT, methods=("RTN",))
    with pytest.raises(QBayesError, match="column\\(s\\) format belong to the options"):
        options(OPT.with_columns(pl.lit("Q4_K_M").alias("format")), formats=named_formats.lookup_all(["Q4_K_M"]))


# --- model shapes and the KV cache -----------------------------------------------------------


def test_every_shape_row_is_a_known_family_with_a_source():
    shapes = kv_cache.load()
    table = pl.read_csv(ROOT / "data" / "model_shapes.csv")
    assert sum(len(s) for s in shapes.by_family.values()) == table.height
    assert table["source"].null_count() == 0
    # grouped-query attention where the papers say so: fewer key-value heads than query heads
    assert shapes.find("Llama-2", 70).kv_heads < shapes.find("Llama-2", 7).kv_heads


def test_kv_cache_of_llama_2_7b_is_half_a_mebibyte_per_token():
    """Llama-2-7B in fp16 keeps 32 layers x 2 x 4096 values per token: 0.5 MiB, 2 GiB at
    its 4096-token context (a figure quoted widely for it)."""
    shape = kv_cache.load().find("Llama-2", 7.0)
    assert shape.model == "Llama-2-7B"
    assert shape.kv_cache_gb(4096) * 1e9 == 2 * 2**30


def test_candidates_find_their_shape_by_family_alias_and_nearest_size():
    shapes = kv_cache.load()
    assert shapes.find("Qwen2.5", 7).model == "Qwen2.5-7B"
    assert shapes.find("qwen 2.5", 7.6).model == "Qwen2.5-7B"
    assert shapes.find("Llama-3.1", 8).model == "Llama-3-8B"  # an alias in data/known_families.csv
    assert shapes.find("Llama-3", 20) is None and "sizes it has: 8B, 70.6B, 405B" in shapes.why_not("Llama-3", 20)
    assert shapes.find("Gemma-2", 9) is None and "no shapes of family Gemma-2" in shapes.why_not("Gemma-2", 9)


def test_a_broken_shape_table_is_refused(tmp_path):
    bad = tmp_path / "model_shapes.csv"
    text = (ROOT / "data" / "model_shapes.csv").read_text()
    bad.write_text(text.replace("Mistral,Mistral-7B", "Mistrall,Mistral-7B"))
    with pytest.raises(QBayesError, match="family 'Mistrall' is not a family of data/known_families.csv"):
        kv_cache.load(bad)


# --- choose with memory beyond the weights -------------------------------------------------------


def test_context_and_overhead_add_to_each_options_memory(small_fit):
    fmts = named_formats.lookup_all(["Q4_K_M", "Q8_0"])
    plain = choose(Predictor(small_fit, n_draws=200), OPT, budget_gb=100.0, formats=fmts)
    more = choose(Predictor(small_fit, n_draws=200), OPT, budget_gb=100.0, formats=fmts, overhead_gb=1.5, context=2048)
    key = ["model", "method", "format"]
    joined = plain.join(more, on=key, how="inner", suffix="_more", nulls_equal=True)
    assert joined.height == plain.height == more.height == 2 * 2 + 2
    assert (joined["weights_gb"] == joined["weights_gb_more"]).all()
    assert plain["kv_cache_gb"].null_count() == plain.height
    shapes = kv_cache.load()
    for r in joined.iter_rows(named=True):
        kv = shapes.find("OPT", r["params_b"]).kv_cache_gb(2048)
        assert r["kv_cache_gb_more"] == pytest.approx(kv)
        assert r["memory_gb_more"] == pytest.approx(r["memory_gb"] + kv + 1.5)
    q4 = plain.filter(pl.col("format") == "Q4_K_M").sort("params_b").row(-1, named=True)
    assert q4["weights_gb"] == pytest.approx(13.0 * fmts[0].bits_per_weight / 8)


def test_a_budget_that_fits_the_weights_may_not_fit_the_kv_cache(small_fit):
    fmts = named_formats.lookup_all(["Q4_K_M"])
    weights = 13.0 * fmts[0].bits_per_weight / 8
    budget = weights + 0.5  # OPT-13B at 2048 tokens keeps 1.68 GB of keys and values
    loose = choose(Predictor(small_fit, n_draws=200), OPT, budget_gb=budget, formats=fmts)
    tight = choose(Predictor(small_fit, n_draws=200), OPT, budget_gb=budget, formats=fmts, context=2048)
    pick = (pl.col("model") == "OPT-13B") & (pl.col("format") == "Q4_K_M")
    assert loose.filter(pick)["within_budget"].item() and not tight.filter(pick)["within_budget"].item()


# --- the command -----------------------------------------------------------------------------


def test_choose_cli_ranks_named_formats_only_when_only_they_are_given(small_fit_path, tmp_path, cli):
    out = tmp_path / "options.csv"
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        12,
        *CANDIDATES,
        "--format",
        "Q4_K_M",
        "--format",
        "q8_0",
        "--format",
        "int4-g128",
        "--method",
        "GPTQ",
        "--output",
        out,
    )
    assert r.code == 0, r.err
    assert "OPT-13B Q4_K_M" in r.out and "OPT-1.3B Q8_0" in r.out and "int4-g128 GPTQ" in r.out
    table = pl.read_csv(out)
    quantized = table.filter(pl.col("method") != "fp16")
    assert set(quantized["format"]) == {"Q4_K_M", "Q8_0", "int4-g128"}  # no method x bits grid
    assert set(quantized["method"]) == {"llama.cpp-kquant", "llama.cpp-legacy", "GPTQ"}


def test_choose_cli_counts_context_and_overhead(small_fit_path, cli):
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        30,
        *CANDIDATES,
        "--format",
        "Q4_K_M",
        "--context",
        4096,
        "--overhead-gb",
        1,
    )
    assert r.code == 0, r.err
    assert "of weights + KV cache of 4096 tokens + 1 GB overhead" in " ".join(r.out.split())


def test_choose_cli_refuses_a_context_for_a_family_without_a_shape(small_fit_path, tmp_path, cli):
    out = tmp_path / "options.csv"
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        30,
        "--family",
        "Gemma-2",
        "--candidate",
        "Gemma-2-9B:9:6.5",
        "--format",
        "Q4_K_M",
        "--context",
        4096,
        "--output",
        out,
    )
    assert r.code == 2
    assert "--context needs each candidate's layers, key-value heads and head size" in r.err
    assert "Gemma-2-9B: no shapes of family Gemma-2" in r.err and "--overhead-gb" in r.err
    assert not out.exists()


def test_choose_cli_unknown_format_suggests_and_writes_nothing(small_fit_path, tmp_path, cli):
    out = tmp_path / "options.csv"
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 30, *CANDIDATES, "--format", "Q5_K_MS", "--output", out)
    assert r.code == 2 and "unknown format 'Q5_K_MS' (did you mean 'Q5_K_" in r.err
    assert not out.exists()


def test_kv_cache_needs_a_positive_context():
    with pytest.raises(QBayesError, match="--context must be at least 1 token"):
        kv_cache.kv_cache_gb(OPT, 0)
    assert np.all(kv_cache.kv_cache_gb(OPT, 1) > 0)
