"""Wall time of a small collection grid with the local executor and with Ray, on this machine.

Builds a few Llama-shaped models of about 1M parameters (briefly trained on Shakespeare), then runs the
same ``qbayes collect`` command twice, as a user would: ``--executor local`` (one process,
model after model, ``--local-threads`` torch threads) and ``--executor ray`` against a
local Ray cluster started for the purpose (one CPU and one torch thread per task, as many
tasks at once as the cluster has CPUs). Both runs include the command's own start-up;
the cluster's start-up is timed apart. With one local thread (the default) both do the
same arithmetic, and the bench checks that they give identical losses.

    python bench/bench_collect_ray.py [--models 3] [--cpus N] [--local-threads 1] [--out DIR]

Needs the collect and ray extras. Timings depend on the machine and on what else runs
on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_key, "1")

import torch  # noqa: E402

from qbayes.collect.executors.ray_cluster import local_cluster  # noqa: E402
from qbayes.collect.manifest import ModelEntry, write_manifest  # noqa: E402
from qbayes.collect.toymodels import ToySpec, make_toy  # noqa: E402
from qbayes.db import store  # noqa: E402

SPEC = ToySpec("llama", hidden=128, layers=2, heads=4, intermediate=512, vocab=2048)  # ~1M parameters
TRAIN_STEPS = 30  # timing does not need a good model
GRID = """
[eval]
sets = ["shakespeare", "pystdlib"]
tokens = 2048
seq_len = 128

[calibration]
sets = ["shakespeare"]
samples = 8
seq_len = 128

[self_check]
tokens = 1024

[efficiency]
decode_tokens = 16
prompt_tokens = 16

[features]
landscape = true
landscape_eval = ["shakespeare"]
tokens = 512
seq_len = 128
hutchinson_samples = 4
power_iters = 4
radii = [0.01, 0.1]
radial_directions = 1
outliers = true
outlier_calib = ["shakespeare"]
outlier_tokens = 1024

[methods.rtn]
formats = ["int4-g32", "int8", "mxfp4"]

[methods.gptq]
formats = ["int4-g32"]
"""


def collect(args: list[str], threads: int | None = None) -> tuple[float, str]:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qbayes", "collect", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"qbayes collect {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=3, help="number of tiny models")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    ap.add_argument("--local-threads", type=int, default=1, help="torch threads of the local run")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="working directory; models built there are reused (default: a temporary one)",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)  # building the models
    root = a.out or Path(tempfile.mkdtemp(prefix="bench-ray-"))
    root.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    entries = []
    for i in range(a.models):
        path = root / f"toy-{i}"
        if not (path / "config.json").exists():
            make_toy(path, SPEC, steps=TRAIN_STEPS, seed=i)
        entries.append(ModelEntry.make(path, "toy"))
    manifest = write_manifest(root / "manifest.csv", entries)
    grid = root / "grid.toml"
    grid.write_text(GRID)
    print(
        f"{a.models} models built in {time.perf_counter() - t0:.1f} s; {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}",
        flush=True,
    )

    common = ["--models", manifest, "--grid", grid]
    for name in ("local", "ray"):
        shutil.rmtree(root / name, ignore_errors=True)
    local_s, _ = collect([*common, "--out", root / "local", "--executor", "local"], threads=a.local_threads)
    print(f"local executor ({a.local_threads} thread(s)): {local_s:7.1f} s", flush=True)
    t0 = time.perf_counter()
    with local_cluster(num_cpus=a.cpus) as address:
        start_s = time.perf_counter() - t0
        ray_s, log = collect([*common, "--out", root / "ray", "--executor", "ray", "--address", address])
    print(f"ray executor ({a.cpus} CPUs):      {ray_s:7.1f} s   (+ {start_s:.1f} s to start the cluster)")
    print("  " + log.strip().splitlines()[0])
    local, ray = store.load(root / "local"), store.load(root / "ray")
    keys = ["model", "method", "dtype_label", "calib_set", "eval_set"]
    same = local.results.select([*keys, "nll"]).sort(keys).equals(ray.results.select([*keys, "nll"]).sort(keys))
    print(
        f"same rows: {local.results.height} results each; nll {'identical' if same else 'different'} "
        f"(local run {a.local_threads} torch thread(s), Ray tasks 1)"
    )
    print(f"load average during the runs: {os.getloadavg()[0]:.1f} (other work on the machine slows both)")
    print(f"work directory: {root}")


if __name__ == "__main__":
    main()
