"""Resume: a run killed mid-way loses at most the configuration in progress; a rerun
finishes the rest without duplicates; a third run has nothing to do; --force recomputes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402

FORMATS = [
    "int2-g32",
    "int3-g32",
    "int4-g32",
    "int5-g32",
    "int6-g32",
    "int8",
    "fp8",
    "nf4-g32",
    "mxint8",
    "mxint4",
    "mxfp4",
    "int4-g32-asym",
]


def _collect(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "qbayes", "collect", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _results(out):
    try:
        return store.load(out).results
    except Exception:  # not written yet
        return None


def test_kill_then_resume_then_force(toy_models, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        eval_sets=("shakespeare", "pystdlib"),
        features=True,
        methods=f"""
[methods.rtn]
formats = {FORMATS!r}
""".replace("'", '"'),
    )
    out = tmp_path / "shard"
    args = ["--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out, "--no-progress"]

    # 1. start, wait until some quantized configurations are saved, kill -9
    proc = _collect(args)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        res = _results(out)
        if res is not None and res.filter(pl.col("method") == "RTN").height >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"collect ended before it could be killed:\n{proc.stdout.read()}")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = store.load(out)  # the shard on disk is valid after a kill
    n_before = killed.results.filter(pl.col("method") == "RTN").height
    assert 4 <= n_before < 2 * len(FORMATS), "the kill should land mid-run"

    # 2. rerun: finishes the rest, redoes nothing already saved
    proc = _collect(args)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    db = store.load(out)  # validates: no duplicate keys
    rtn = db.results.filter(pl.col("method") == "RTN")
    assert rtn.height == 2 * len(FORMATS) and set(rtn["dtype_label"]) == set(FORMATS)
    assert db.results.filter(pl.col("method") == "none").height == 2
    assert db.failures.height == 0
    assert "already in the shard" in log
    first_rows = killed.results.filter(pl.col("method") == "RTN").select("dtype_label", "eval_set", "run_id")
    kept = first_rows.join(rtn.select("dtype_label", "eval_set", "run_id"), on=["dtype_label", "eval_set"])
    assert (kept["run_id"] == kept["run_id_right"]).all()  # saved rows were not recomputed
    assert rtn["run_id"].n_unique() == 2
    features = db.features.height
    assert features > 0 and db.features.filter(pl.col("feature") == "hessian_trace").height > 1

    # 3. a third run has nothing to do
    proc = _collect(args)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and " 0 step(s) ran" in log, log
    assert store.load(out).results.equals(db.results)

    # 4. --force recomputes everything in place: same rows, new run id, no duplicates
    proc = _collect([*args, "--formats", "int4-g32,int8", "--force"])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    forced = store.load(out)
    assert forced.results.height == db.results.height and forced.features.height == features
    redone = forced.results.filter(pl.col("dtype_label").is_in(["int4-g32", "int8", "fp32"]))
    assert redone["run_id"].n_unique() == 1 and redone["run_id"][0] not in set(db.results["run_id"])
