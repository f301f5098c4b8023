"""quanto's packed int4/int2 weights, which need its C++ extension.

The extension is compiled on first use and cached inside the optimum-quanto install;
measured here: about 25 s on two cores for the build, under 4 s once cached.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402


def test_quanto_packed_int4_int2_record_the_group_size_used(cli, toy_models, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        methods="""
[methods.quanto]
formats = ["int4-g128-asym", "int2-g128-asym", "int8"]
""",
    )
    out = tmp_path / "shard"
    r = cli("collect", "--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out, "--no-progress")
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
