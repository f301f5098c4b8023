"""OPT and GPT-2: the architectures whose layers differ from Llama's (OPT needs AWQ
mappings of our own; GPT-2 keeps its projections in transposed Conv1D layers)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402


def test_opt_with_calibrated_methods_and_features(cli, toy_models, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        features=True,
        methods="""
[methods.rtn]
formats = ["int3-g32", "int8"]
[methods.gptq]
formats = ["int3-g32"]
[methods.awq]
formats = ["int3-g32-asym"]
n_grid = 4
""",
    )
    out = tmp_path / "shard"
    r = cli(
        "collect", "--model", toy_models["opt"], "--family", "toy-opt", "--grid", grid, "--out", out, "--no-progress"
    )
    assert r.code == 0, r.err
    db = store.load(out)
    assert db.failures.height == 0, db.failures["message"].to_list()
    res = {(m, d): n for m, d, n in db.results.select("method", "dtype_label", "nll").iter_rows()}
    base = res[("none", "fp32")]
    assert res[("RTN", "int3-g32")] - base > abs(res[("RTN", "int8")] - base)
    # GPTQ's error compensation should not do worse than plain rounding at 3 bits (small slack for noise)
    assert res[("GPTQ", "int3-g32")] <= res[("RTN", "int3-g32")] + 0.01
    assert abs(res[("AWQ", "int3-g32-asym")] - base) < 0.2
    assert db.models["architecture"][0] == "opt" and db.models["mlp"][0] == "relu"
    trace = db.features.filter((pl.col("feature") == "hessian_trace") & (pl.col("scope") == "model"))
    assert trace["value"][0] > 0


def test_gpt2_conv1d_layers_are_quantized_and_measured(cli, toy_models, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        features=True,
        methods="""
[methods.rtn]
formats = ["int2-g32", "int8"]
""",
    )
    out = tmp_path / "shard"
    r = cli(
        "collect", "--model", toy_models["gpt2"], "--family", "toy-gpt2", "--grid", grid, "--out", out, "--no-progress"
    )
    assert r.code == 0, r.err
    db = store.load(out)
    sq = dict(zip(db.results["dtype_label"], db.results["sqnr_db"]))
    assert sq["int2-g32"] < sq["int8"]
    layers = db.features.filter((pl.col("feature") == "act_max_abs") & (pl.col("scope") != "model"))
    assert set(layers["scope"]) == {
        f"transformer.h.{i}.{m}" for i in (0, 1) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert db.features.filter(pl.col("feature") == "hessian_top_eig")["value"][0] > 0


def test_per_layer_sqnr_rows_once_the_schema_allows_them(cli, toy_models, tmp_path, monkeypatch):
    """Per-layer SQNR is written as feature 'sqnr_db' only where the schema lists that
    name; here the schema is extended for the test, as the database owner would."""
    import dataclasses

    from qbayes.collect import features
    from qbayes.db import schema

    table = schema.TABLES["features"]
    cols = tuple(
        dataclasses.replace(c, allowed=(*c.allowed, "sqnr_db")) if c.name == "feature" else c for c in table.columns
    )
    monkeypatch.setitem(schema.TABLES, "features", dataclasses.replace(table, columns=cols))
    monkeypatch.setattr(features, "FEATURES", (*schema.FEATURES, "sqnr_db"))
    grid = write_grid(tmp_path / "g.toml", methods='[methods.rtn]\nformats = ["int2-g32", "int8"]\n')
    out = tmp_path / "shard"
    r = cli(
        "collect", "--model", toy_models["opt"], "--family", "toy-opt", "--grid", grid, "--out", out, "--no-progress"
    )
    assert r.code == 0, r.err
    db = store.load(out)
    sq = db.features.filter(pl.col("feature") == "sqnr_db")
    assert sq.height == 2 * 12  # two formats x 6 projections x 2 layers
    int2 = sq.filter(pl.col("scope").str.starts_with("RTN/int2-g32/-:"))
    int8 = sq.filter(pl.col("scope").str.starts_with("RTN/int8/-:"))
    assert int2.height == int8.height == 12 and int2["value"].max() < int8["value"].min()
    overall = dict(zip(db.results["dtype_label"], db.results["sqnr_db"], strict=False))
    assert int2["value"].min() <= overall["int2-g32"] <= int2["value"].max()
