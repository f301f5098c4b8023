"""The Ray executor on a real local Ray cluster (no mocks): a head node on loopback with
2 CPUs, started once for the module with ``ray start --head`` and stopped afterwards.

* a Ray run of two models equals a local run, value for value; a rerun submits nothing,
  and ``--force`` recomputes in place;
* a worker killed in the middle of a task: Ray retries the task, which resumes from the
  shard its first attempt saved, and the database ends with every configuration once;
  a model that cannot be loaded fails its tasks (not retried), with the reason listed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

import polars as pl  # noqa: E402

from qbayes.collect.manifest import ModelEntry, write_manifest  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import write_grid  # noqa: E402

pytestmark = pytest.mark.ray

KEYS = {
    "models": ["model"],
    "results": ["model", "method", "dtype_label", "calib_set", "eval_set", "seq_len"],
    "features": ["model", "feature", "scope", "calib_set", "eval_set", "radius"],
}
# deterministic measurements (wall times, decode speed, run ids, timestamps, hosts and
# notes, which carry timings, are left out)
VALUES = {
    "models": ["family", "params_b", "non_embedding_params_b", "architecture", "position_encoding", "norm", "mlp"],
    "results": [
        "w_kind",
        "w_bits",
        "group_size",
        "w_bits_eff",
        "w_sym",
        "act_bits",
        "eval_tokens",
        "nll",
        "ppl",
        "nll_se",
        "sqnr_db",
        "weight_bytes",
    ],
    "features": ["value", "se"],
}
TOY_STEPS = 20
KILL_FORMATS = ["int2-g32", "int3-g32", "int4-g32", "int5-g32", "int6-g32", "int8", "fp8", "nf4-g32", "mxint8", "mxfp4"]


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict[str, Path]:
    """Llama- and OPT-shaped toy models, briefly trained: these tests compare executors,
    not quantization, and a short build keeps the module quick on a small machine."""
    import torch

    from qbayes.collect.toymodels import ToySpec, make_toy

    root, threads = tmp_path_factory.mktemp("ray-toys"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for arch in ("llama", "opt"):
            make_toy(root / f"toy-{arch}", ToySpec(arch), steps=TOY_STEPS)
    finally:
        torch.set_num_threads(threads)
    return {arch: root / f"toy-{arch}" for arch in ("llama", "opt")}


@pytest.fixture(scope="module")
def cluster():
    from qbayes.collect.executors.ray_cluster import local_cluster

    with local_cluster(num_cpus=2) as address:
        yield address


def _collect(*args, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # as Ray's 1-CPU tasks run: same float sums
    return subprocess.Popen(
        [sys.executable, "-m", "qbayes", "collect", *map(str, args), "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log
    return log


def _table(db, name: str) -> pl.DataFrame:
    return getattr(db, name).select(KEYS[name] + VALUES[name]).sort(KEYS[name], nulls_last=True)


def test_ray_run_equals_local_run_and_a_rerun_submits_nothing(cluster, toys, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        features=True,
        methods="""
[methods.rtn]
formats = ["int4-g32", "int8"]

[methods.gptq]
formats = ["int4-g32"]
""",
    )
    models = [toys["llama"], toys["opt"]]
    manifest = write_manifest(
        tmp_path / "models" / "manifest.csv",
        [ModelEntry.make(os.path.relpath(m, tmp_path / "models"), "toy", m.name) for m in models],
    )
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"

    log = _finish(
        _collect("--models", manifest, "--grid", grid, "--out", ray_out, "--executor", "ray", "--address", cluster)
    )
    assert "ray: 8 task(s): 8 ran, 0 already complete, 0 failed" in log, log
    _finish(
        _collect(
            *[a for m in models for a in ("--model", m)],
            "--family",
            "toy",
            "--grid",
            grid,
            "--out",
            local_out,
            threads=1,
        )
    )

    ray_db, local_db = store.load(ray_out), store.load(local_out)
    assert ray_db.results.height == 2 * (1 + 3) and ray_db.failures.height == 0
    assert ray_db.features.filter(pl.col("feature") == "hessian_trace").height > 2
    for name in KEYS:
        assert _table(ray_db, name).equals(_table(local_db, name)), name

    log = _finish(
        _collect("--models", manifest, "--grid", grid, "--out", ray_out, "--executor", "ray", "--address", cluster)
    )
    assert "all 8 task(s) already complete" in log and "nothing submitted" in log, log
    assert store.load(ray_out).results.equals(ray_db.results)

    # --force recomputes the chosen tasks; their rows replace the old ones, the others stay
    log = _finish(
        _collect(
            "--models",
            manifest,
            "--grid",
            grid,
            "--methods",
            "rtn",
            "--out",
            ray_out,
            "--executor",
            "ray",
            "--address",
            cluster,
            "--force",
        )
    )
    assert "ray: 6 task(s): 6 ran" in log, log
    forced = store.load(ray_out)
    assert forced.results.height == ray_db.results.height and forced.features.height == ray_db.features.height
    old_runs = set(ray_db.results["run_id"])
    gptq = forced.results.filter(pl.col("method") == "GPTQ")
    assert gptq.height == 2 and set(gptq["run_id"]) <= old_runs
    assert not set(forced.results.filter(pl.col("method") != "GPTQ")["run_id"]) & old_runs
    for name in KEYS:
        assert _table(forced, name).equals(_table(ray_db, name)), name


def test_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(cluster, toys, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        methods=f"""
[methods.rtn]
formats = {json.dumps(KILL_FORMATS)}
""",
    )
    out = tmp_path / "out"
    target = out / "_tasks" / "toy-llama__rtn"
    # a model that passes the preflight but cannot load (its weights are cut short): its
    # tasks fail, once, with the reason
    missing = tmp_path / "missing"
    shutil.copytree(toys["opt"], missing)
    weights = missing / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = _collect(
        "--model",
        toys["llama"],
        "--model",
        toys["opt"],
        "--model",
        missing,
        "--family",
        "toy",
        "--grid",
        grid,
        "--out",
        out,
        "--executor",
        "ray",
        "--address",
        cluster,
        "--retries",
        "2",
    )

    # wait until the task has saved some of its configurations, then kill its worker
    deadline = time.monotonic() + 240
    saved = None
    while time.monotonic() < deadline:
        saved = _rtn_rows(target)
        if saved is not None and saved.height >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"collect ended before the worker could be killed:\n{proc.stdout.read()}")
        time.sleep(0.02)
    first = json.loads((target / "attempts.jsonl").read_text().splitlines()[0])
    os.kill(first["pid"], signal.SIGKILL)
    assert saved.height < len(KILL_FORMATS), "the kill should land mid-task"

    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, log  # the missing model's tasks did not complete
    assert "ray: 6 task(s): 4 ran, 0 already complete, 2 failed" in log, log
    assert "retried: toy-llama/rtn (2 attempts)" in log, log
    assert "failed: task missing/baseline: " in log and "cannot load the model" in log, log
    assert "failed: task missing/rtn: not run: missing/baseline failed" in log, log
    attempts = [json.loads(line) for line in (target / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[1]["pid"] != first["pid"]
    assert len((out / "_tasks" / "missing__baseline" / "attempts.jsonl").read_text().splitlines()) == 1

    db = store.load(out)  # validates: no duplicate keys
    assert db.failures.select("model", "stage").rows() == [("missing", "load")]
    for model in ("toy-llama", "toy-opt"):
        rows = db.results.filter(pl.col("model") == model)
        rtn = rows.filter(pl.col("method") == "RTN")
        assert sorted(rtn["dtype_label"]) == sorted(KILL_FORMATS)  # every configuration, once
        assert rows.filter(pl.col("method") == "none").height == 1
    # what the first attempt saved was kept, not recomputed by the retry
    kept = saved.join(db.results.select("model", "dtype_label", "run_id"), on=["model", "dtype_label"])
    assert kept.height == saved.height and (kept["run_id"] == kept["run_id_right"]).all()


def _rtn_rows(shard) -> pl.DataFrame | None:
    try:
        df = pl.read_parquet(shard / "results.parquet")
    except Exception:  # not written yet, or being replaced
        return None
    return df.filter(pl.col("method") == "RTN").select("model", "dtype_label", "run_id")


def _pid() -> int:
    return os.getpid()


def test_gpu_tasks_run_in_fresh_worker_processes():
    """On a cluster that declares two (fake) GPUs, four GPU tasks with the executor's
    options run in four worker processes: nothing one leaves in GPU memory reaches the next."""
    import ray

    from qbayes.collect.executors.ray_cluster import local_cluster
    from qbayes.collect.executors.ray_executor import client_authentication, remote_function, task_options

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this file
    with local_cluster(num_cpus=2, num_gpus=2) as address:
        client_authentication()
        ray.init(address=address, log_to_driver=False)
        try:
            pid = remote_function(ray, _pid, 1).options(**task_options(1, 1, 0))
            pids = ray.get([pid.remote() for _ in range(4)])
        finally:
            ray.shutdown()
    assert len(set(pids)) == 4, pids


def test_a_cluster_with_token_authentication_accepts_the_driver(toys, tmp_path, monkeypatch):
    """Where a Ray token exists (here in a private home, as ``ray.init()`` leaves one in
    ~/.ray/auth_token), ``ray start`` turns token authentication on; the driver, given
    the address, must authenticate too."""
    from qbayes.collect.executors.ray_cluster import local_cluster

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("qbayes-test-token-0123456789abcdef")
    monkeypatch.setenv("HOME", str(home))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    grid = write_grid(tmp_path / "g.toml", methods='[methods.rtn]\nformats = ["int8"]\n')
    out = tmp_path / "out"
    with local_cluster(num_cpus=2) as address:
        log = _finish(
            _collect(
                "--model",
                toys["llama"],
                "--family",
                "toy",
                "--grid",
                grid,
                "--out",
                out,
                "--executor",
                "ray",
                "--address",
                address,
            )
        )
    assert "2 task(s): 2 ran" in log, log
    assert store.load(out).results.height == 2
