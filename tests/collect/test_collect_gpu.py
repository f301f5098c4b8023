"""Collection on a CUDA device, including the optional AutoAWQ backend when installed.

Marked ``gpu`` and skipped where no CUDA device is present (``pytest -m gpu``).
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402


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
    r = cli(
        "collect",
        "--model",
        toy_models["llama"],
        "--family",
        "toy",
        "--grid",
        grid,
        "--out",
        out,
        "--device",
        "cuda",
        "--no-progress",
    )
    assert r.code == 0, r.err
    db = store.load(out)
    assert db.failures.height == 0, db.failures["message"].to_list()
    assert db.results["device"][0].startswith("cuda")
    base = db.results.filter(pl.col("method") == "none")["nll"][0]
    int8 = db.results.filter(pl.col("dtype_label") == "int8")["nll"]
    assert (abs(int8 - base) < 0.01).all()
