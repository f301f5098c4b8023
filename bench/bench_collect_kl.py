"""What the KL divergence costs: evaluation time with and without the reference model.

Builds a Llama-shaped model (briefly trained on Shakespeare), quantizes it with RTN int4
and times ``evaluate`` on the same windows without and with ``reference=`` (the
unquantized model, run again beside the quantized one, and the float64 KL per token).

    python bench/bench_collect_kl.py [--size 1m|10m] [--windows 32] [--seq-len 256] [--threads N]

Needs the collect extra. Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from qbayes.collect import protocol  # noqa: E402
from qbayes.collect.evaluate import evaluate  # noqa: E402
from qbayes.collect.methods.base import QuantizeJob  # noqa: E402
from qbayes.collect.methods.rtn_method import RTN  # noqa: E402
from qbayes.collect.modelio import load_model  # noqa: E402
from qbayes.collect.toymodels import ToySpec, make_toy  # noqa: E402
from qbayes.formats import parse_format  # noqa: E402

SIZES = {
    "1m": ToySpec("llama", hidden=128, layers=2, heads=4, intermediate=512, vocab=2048),
    "10m": ToySpec("llama", hidden=256, layers=6, heads=8, intermediate=1024, vocab=8192),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1m")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        make_toy(path, SIZES[args.size], steps=20)
        loaded = load_model(path)
        windows = protocol.windows(loaded.tokenizer, "shakespeare", "eval", seq_len=args.seq_len, count=args.windows)
        q = RTN().quantize(QuantizeJob(loaded, parse_format("int4-g32"), None, None, 0)).model
        times = {"nll only": [], "nll + KL": []}
        for _ in range(args.repeats):
            for label, ref in (("nll only", None), ("nll + KL", loaded.model)):
                t0 = time.perf_counter()
                res = evaluate(q, windows, 8, reference=ref)
                times[label].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        print(
            f"{args.size} llama, vocab {SIZES[args.size].vocab}, {windows.shape[0]} windows x {args.seq_len} "
            f"tokens, {torch.get_num_threads()} threads, best of {args.repeats}:"
        )
        for label, t in best.items():
            print(f"  {label:9s} {t:7.2f} s")
        print(
            f"  KL costs x{best['nll + KL'] / best['nll only']:.2f} the evaluation time "
            f"(KL {res.kl.mean:.4f} ± {res.kl.se:.4f}, p99 {res.kl.p99:.4f}, top-1 {res.kl.top1_agree:.3f})"
        )


if __name__ == "__main__":
    main()
