"""Failing backends and configurations that fail once a model is loaded: a clear message
for the configuration that cannot run, the others still run, the shard records what
failed and why, and the run exits 1. (What the preflight refuses: test_preflight.py.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.collect import methods, texts  # noqa: E402
from qbayes.collect.methods.base import Method, Quantized  # noqa: E402
from qbayes.collect.methods.rtn_method import RTN  # noqa: E402
from qbayes.collect.sqnr import SqnrAccumulator  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402


class NoisyBackend(Method):
    """A broken backend: adds noise to every weight, even in its identity configuration."""

    name = "noisy"
    label = "RTN"
    label_suffix = "@noisy"
    description = "test backend that corrupts weights"
    self_check_format = RTN.self_check_format

    def quantize(self, job):
        model = job.loaded.fresh_copy()
        gen = torch.Generator().manual_seed(0)
        n = 0
        for layer in job.loaded.layers(model):
            w = layer.weight()
            layer.set_weight(w + torch.randn(w.shape, generator=gen) * w.std() * 2)
            n += w.numel()
        return Quantized(model, None, 16 * n, n, SqnrAccumulator())


class OomBackend(Method):
    """Runs out of memory on 2-bit formats only."""

    name = "oomy"
    label = "RTN"
    label_suffix = "@oomy"
    description = "test backend that runs out of memory at 2 bits"

    def quantize(self, job):
        if job.fmt.bits == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return RTN().quantize(job)


@pytest.fixture
def test_backends():
    for m in (NoisyBackend(), OomBackend()):
        methods.register(m, replace=True)
    yield
    for m in ("noisy", "oomy"):
        methods.unregister(m)


def _failures(out):
    return store.load(out).failures


def test_failing_backend_is_reported_and_writes_no_rows(cli, toy_models, tmp_path, test_backends):
    grid = write_grid(
        tmp_path / "g.toml",
        methods="""
[methods.rtn]
formats = ["int4-g32"]
[methods.noisy]
formats = ["int4-g32", "int8"]
[methods.oomy]
formats = ["int2-g32", "int8"]
""",
    )
    out = tmp_path / "shard"
    r = cli("collect", "--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out, "--no-progress")
    assert r.code == 1, r.err
    db = store.load(out)
    labels = set(db.results["dtype_label"])
    assert labels == {"fp32", "int4-g32", "int8@oomy"}  # noisy wrote nothing; oomy's int8 ran
    f = db.failures
    check = f.filter(pl.col("config") == "noisy/self-check").row(0, named=True)
    assert check["stage"] == "self-check" and check["error_type"] == "SelfCheckFailed"
    assert "tolerance" in check["message"]
    skipped = f.filter(pl.col("config").str.starts_with("noisy/int"))
    assert skipped.height == 2 and set(skipped["error_type"]) == {"SelfCheckFailed"}
    oom = f.filter(pl.col("config") == "oomy/int2-g32/-").row(0, named=True)
    assert oom["error_type"] == "OutOfMemory" and "out of memory" in oom["message"]
    assert "failed: noisy/self-check" in r.out


def test_empty_calibration_set_fails_that_configuration(cli, toy_models, tmp_path, monkeypatch):
    real = texts.load_text

    def nearly_empty(name, split, seed=0):  # a single character: not one window of tokens
        return "!" if name == "noise" else real(name, split, seed=seed)

    monkeypatch.setattr(texts, "load_text", nearly_empty)
    grid = write_grid(
        tmp_path / "g.toml",
        calib=("shakespeare", "noise"),
        methods="""
[methods.gptq]
formats = ["int4-g32"]
""",
    )
    out = tmp_path / "shard"
    r = cli("collect", "--model", toy_models["opt"], "--family", "toy", "--grid", grid, "--out", out, "--no-progress")
    assert r.code == 1, r.err
    db = store.load(out)
    assert db.results.filter(pl.col("method") == "GPTQ")["calib_set"].to_list() == ["shakespeare"]
    fail = db.failures.row(0, named=True)
    assert fail["config"] == "gptq/int4-g32/noise" and fail["stage"] == "calibration"
    assert "empty calibration set 'noise'" in fail["message"]


def test_path_without_a_model_is_refused_before_anything_is_written(cli, tmp_path):
    out = tmp_path / "shard"
    r = cli("collect", "--model", tmp_path / "nothing", "--family", "toy", "--grid", "tiny", "--out", out)
    assert r.code == 2 and "no such model directory" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("collect", "--model", empty, "--family", "toy", "--grid", "tiny", "--out", out)
    assert r.code == 2 and "no config.json" in r.err
    assert not out.exists()


def test_cli_level_errors_exit_2(cli, toy_models, tmp_path):
    args = ("collect", "--model", toy_models["llama"], "--family", "toy", "--out", tmp_path / "s")
    r = cli(*args, "--grid", "tiny", "--methods", "gtpq", "--formats", "int4")
    assert r.code == 2 and "unknown method 'gtpq' (did you mean 'gptq'?)" in r.err
    r = cli(*args, "--grid", "tinny")
    assert r.code == 2 and "did you mean 'tiny'" in r.err
    r = cli(*args, "--grid", "tiny", "--eval", "wikitext")
    assert r.code == 2 and "unknown evaluation set 'wikitext'" in r.err
    if not torch.cuda.is_available():
        r = cli(*args, "--grid", "tiny", "--device", "cuda")
        assert r.code == 2 and "no CUDA device" in r.err
    assert not (tmp_path / "s" / "results.parquet").exists()  # nothing measured
