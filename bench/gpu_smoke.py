"""GPU smoke run of ``qbayes collect``: a grid on a small real model on CUDA, per step.

Runs every step of a grid (by default the shipped ``default`` grid) through the
collector on ``--device cuda`` and prints, per step (model load, baselines, features,
each method's configurations), the wall time, the peak ``torch.cuda.max_memory_allocated``
during the step, and what stays allocated after it (which must come back to the base
model's weights after every quantized configuration), then the memory plan's estimate
of the largest step beside the largest measured peak.

    python bench/gpu_smoke.py --model DIR [--grid default] [--methods rtn,gptq] [--out DIR]

``DIR`` is a small causal LM saved with ``save_pretrained`` (e.g. a 0.5B-1B model copied
onto the node; nothing is downloaded). Needs the collect extra and a CUDA device; without
one it stops with exit status 2 and says so. Timings depend on the device and what else
runs on it: quote the device with the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from qbayes.cli.collect import resolve_grid  # noqa: E402
from qbayes.collect.executors.base import CollectRequest  # noqa: E402
from qbayes.collect.grid import load_grid  # noqa: E402
from qbayes.collect.manifest import ModelEntry  # noqa: E402
from qbayes.collect.memory import gib, plan  # noqa: E402
from qbayes.collect.modelio import skeleton  # noqa: E402
from qbayes.collect.plan import CollectOptions  # noqa: E402
from qbayes.collect.preflight import preflight  # noqa: E402
from qbayes.collect.runner import Collector  # noqa: E402


class MeasuredCollector(Collector):
    """The collector, with every step's wall time and CUDA memory recorded."""

    def __init__(self, opts: CollectOptions, console: Console):
        super().__init__(opts, console)
        self.rows: list[tuple[str, float, int, int]] = []  # step, seconds, peak bytes, bytes after

    def load(self) -> None:
        self._measured("model load", super().load)

    def execute(self, step) -> None:
        self._measured(step.label, lambda: Collector.execute(self, step))

    def _measured(self, label: str, run) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        self.rows.append(
            (label, time.perf_counter() - t0, torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated())
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="small causal LM directory (save_pretrained)")
    ap.add_argument("--grid", default="default", help="grid file or shipped grid name (default: default)")
    ap.add_argument("--methods", default="", help="only these methods, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="shard directory (default: a temporary one)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            f"gpu_smoke: no CUDA device (torch {torch.__version__}, built "
            f"{'with' if torch.version.cuda else 'without'} CUDA); run it on a GPU node",
            file=sys.stderr,
        )
        return 2
    grid = load_grid(resolve_grid(args.grid))
    methods = tuple(m for m in args.methods.split(",") if m)
    if methods:
        grid = grid.select(methods=methods)
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    entry = ModelEntry(args.model.resolve(), "smoke", args.model.resolve().name)
    request = preflight(CollectRequest((entry,), grid, out, device="cuda"))
    console = Console(stderr=True, soft_wrap=True)
    opts = CollectOptions(entry.path, "smoke", request.grid, out, name=entry.name, device="cuda", progress=False)
    collector = MeasuredCollector(opts, console)
    summary = collector.run()

    props = torch.cuda.get_device_properties(0)
    print(
        f"device: {props.name}, {gib(props.total_memory)}, {torch.cuda.device_count()} visible; "
        f"torch {torch.__version__}"
    )
    print(f"model: {entry.path} ({grid.eval.dtype}); shard: {out}")
    print(f"{'step':48s} {'wall s':>8s} {'peak GiB':>9s} {'after GiB':>10s}")
    for label, seconds, peak, after in collector.rows:
        print(f"{label:48s} {seconds:8.1f} {peak / 2**30:9.2f} {after / 2**30:10.2f}")
    memory = plan(skeleton(entry.path), request.grid, [m.name for m in request.grid.methods])
    worst = max(collector.rows, key=lambda r: r[2])
    print(f"largest measured peak: {worst[0]} {gib(worst[2])}; plan's largest step: {memory.largest.describe()}")
    for line in summary.failed:
        print(f"failed: {line.splitlines()[0]}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
