"""Wall time of ``qbayes collect`` per configuration and per feature, on CPU.

Builds two Llama-shaped models (~1M and ~10M parameters, briefly trained on Shakespeare),
runs a fixed grid through the collector and prints, per model: the time of every step,
split into quantization, evaluation and self-check, and the share of the total spent in
feature extraction versus quantization and evaluation.

    python bench/bench_collect.py [--sizes 1m,10m] [--out DIR] [--threads N]

Needs the collect extra. Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from qbayes.collect import methods, runner  # noqa: E402
from qbayes.collect.grid import grid_from_dict  # noqa: E402
from qbayes.collect.plan import CollectOptions  # noqa: E402
from qbayes.collect.toymodels import ToySpec, make_toy  # noqa: E402

SIZES = {
    "1m": ToySpec("llama", hidden=128, layers=2, heads=4, intermediate=512, vocab=2048),
    "10m": ToySpec("llama", hidden=256, layers=6, heads=8, intermediate=1024, vocab=8192),
}
TRAIN_STEPS = 30  # timing does not need a good model, only a trained-looking one

GRID = {
    "eval": {"sets": ["shakespeare", "pystdlib"], "tokens": 8192, "seq_len": 256, "batch_size": 8},
    "calibration": {"sets": ["shakespeare"], "samples": 16, "seq_len": 256},
    "self_check": {"tokens": 2048},
    "efficiency": {"decode_tokens": 32, "prompt_tokens": 16},
    "features": {
        "landscape": True,
        "landscape_eval": ["shakespeare"],
        "tokens": 1024,
        "seq_len": 256,
        "hutchinson_samples": 8,
        "power_iters": 8,
        "radii": [0.01, 0.1],
        "radial_directions": 2,
        "outliers": True,
        "outlier_calib": ["shakespeare", "noise"],
        "outlier_tokens": 2048,
    },
    "methods": {
        "rtn": {"formats": ["int4-g128", "int8", "mxfp4"]},
        "quanto": {"formats": ["int8"]},
        "gptq": {"formats": ["int4-g128"]},
        "awq": {"formats": ["int4-g128-asym"], "n_grid": 10},
    },
}


class Timers:
    """Seconds spent in quantization and evaluation, attributed to the current step."""

    def __init__(self):
        self.step = "load"
        self.spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def wrap(self, fn, bucket: str):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[self.step][bucket] += time.perf_counter() - t0

        return timed


class TimedCollector(runner.Collector):
    def __init__(self, *args, timers: Timers, **kwargs):
        super().__init__(*args, **kwargs)
        self.timers = timers
        self.step_wall: dict[str, float] = {}

    def execute(self, step):
        self.timers.step = step.label
        t0 = time.perf_counter()
        super().execute(step)
        self.step_wall[step.label] = time.perf_counter() - t0


def bench(size: str, root: Path, console: Console) -> None:
    spec = SIZES[size]
    t0 = time.perf_counter()
    info = make_toy(root / f"llama-{size}", spec, steps=TRAIN_STEPS)
    console.print(
        f"\n[bold]model {size}[/bold]: {info['params'] / 1e6:.2f}M parameters "
        f"(built and trained {TRAIN_STEPS} steps in {time.perf_counter() - t0:.1f} s)"
    )
    timers = Timers()
    originals = {}
    for name in methods.names():
        m = methods.get(name)
        originals[name] = m.quantize
        m.quantize = timers.wrap(m.quantize, "quantize")
    original_eval = runner.evaluate
    runner.evaluate = timers.wrap(original_eval, "evaluate")
    try:
        opts = CollectOptions(
            model_path=root / f"llama-{size}",
            family="bench",
            out=root / f"shard-{size}",
            grid=grid_from_dict(GRID, name="bench", where="bench"),
            progress=False,
        )
        collector = TimedCollector(opts, Console(quiet=True), timers=timers)
        t0 = time.perf_counter()
        collector.run()
        total = time.perf_counter() - t0
    finally:
        runner.evaluate = original_eval
        for name, fn in originals.items():
            methods.get(name).quantize = fn

    console.print(f"{'step':42s} {'wall s':>8s} {'quantize':>9s} {'evaluate':>9s} {'other':>8s}")
    groups = defaultdict(float)
    for label, wall in collector.step_wall.items():
        q = timers.spent[label].get("quantize", 0.0)
        e = timers.spent[label].get("evaluate", 0.0)
        console.print(f"{label:42s} {wall:8.2f} {q:9.2f} {e:9.2f} {wall - q - e:8.2f}", highlight=False)
        kind = (
            "features"
            if label.startswith("features/")
            else "baseline"
            if label.startswith("baseline/")
            else "configurations"
        )
        groups[kind] += wall
        groups["quantize (incl. self-checks)"] += q
        groups["evaluate (incl. self-checks)"] += e
    feats = collector.shard.db.features
    per_feature = feats.group_by("feature").agg(wall=__import__("polars").col("wall_s").first()).sort("feature")
    console.print(
        "per feature (one computation, seconds): " + ", ".join(f"{f} {w:.2f}" for f, w in per_feature.iter_rows()),
        highlight=False,
    )
    load = total - sum(collector.step_wall.values())
    console.print(
        f"total {total:.1f} s (model load {load:.1f} s); "
        f"features {groups['features']:.1f} s = {100 * groups['features'] / total:.0f}%, "
        f"baseline {groups['baseline']:.1f} s = {100 * groups['baseline'] / total:.0f}%, "
        f"quantized configurations {groups['configurations']:.1f} s = "
        f"{100 * groups['configurations'] / total:.0f}% (of which quantize "
        f"{groups['quantize (incl. self-checks)']:.1f} s, evaluate "
        f"{groups['evaluate (incl. self-checks)']:.1f} s over all steps)",
        highlight=False,
    )
    if collector.summary.failed:
        console.print("failures: " + "; ".join(collector.summary.failed), highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m")
    parser.add_argument("--out", default=None, help="keep models and shards here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(soft_wrap=True)
    console.print(
        f"bench_collect: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for size in args.sizes.split(","):
            bench(size.strip(), root, console)


if __name__ == "__main__":
    main()
