"""Slow and GPU-only collection tests (not in the default suite).

* quanto's int2/int4 weights need its C++ extension, compiled on first use (about 40-95 s
  on two cores, then cached inside the optimum-quanto install): ``pytest -m slow``.
* CUDA: the same path on a GPU, including the optional AutoAWQ backend when installed:
  ``pytest -m gpu`` (skipped where no CUDA device is present).
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

import polars as pl  # noqa: E402
from collect_support import write_grid  # noqa: E402

from qbayes.db import store  # noqa: E402


@pytest.mark.slow
def test_quanto_packed_int4_int2_record_the_group_size_used(cli, toy_models, tmp_path):
    grid = write_grid(tmp_path / "g.toml", methods="""
[methods.quanto]
formats = ["int4-g128-asym", "int2-g128-asym", "int8"]
""")
    out = tmp_path / "shard"
    r = cli("collect", "--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out,
            "--no-progress")
    assert r.code == 0, r.err
    db = store.load(out)
    assert db.failures.height == 0, db.failures["message"].to_list()
    q = {row["dtype_label"]: row for row in db.results.iter_rows(named=True) if row["method"] == "quanto"}
    # the toy's projections are 64 wide (too narrow for groups) except down_proj (256 inputs: g128)
    for label in ("int4-g128-asym", "int2-g128-asym"):
        assert q[label]["group_size"] is None and q[label]["w_sym"] is False
        assert "g128" in q[label]["note"] and "per-channel" in q[label]["note"]
        assert q[label]["decode_tok_s"] > 0
    assert q["int2-g128-asym"]["sqnr_db"] < q["int4-g128-asym"]["sqnr_db"] < q["int8"]["sqnr_db"]
    assert q["int2-g128-asym"]["weight_bytes"] < q["int4-g128-asym"]["weight_bytes"] < q["int8"]["weight_bytes"]
    assert q["int2-g128-asym"]["nll"] > q["int8"]["nll"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_collect_on_cuda(cli, toy_models, tmp_path):
    methods = """
[methods.rtn]
formats = ["int4-g32", "int8"]
[methods.quanto]
formats = ["int8"]
[methods.gptq]
formats = ["int4-g32"]
"""
    if importlib.util.find_spec("awq") is not None:
        methods += '[methods.autoawq]\nformats = ["int4-g64-asym"]\n'
    grid = write_grid(tmp_path / "g.toml", features=True, methods=methods)
    out = tmp_path / "shard"
    r = cli("collect", "--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out,
            "--device", "cuda", "--no-progress")
    assert r.code == 0, r.err
    db = store.load(out)
    assert db.failures.height == 0, db.failures["message"].to_list()
    assert db.results["device"][0].startswith("cuda")
    base = db.results.filter(pl.col("method") == "none")["nll"][0]
    int8 = db.results.filter(pl.col("dtype_label") == "int8")["nll"]
    assert (abs(int8 - base) < 0.01).all()
