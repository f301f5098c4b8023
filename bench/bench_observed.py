"""Wall time of ``qbayes predict --observed`` from the shipped posterior: 5 observed rows of a
family the fit has not seen and 1,000 queries, start-up included (issue 32's target: < 10 s).

    python bench/bench_observed.py [--repeat 3]

Prints the wall time of each run, with and without --observed, the CPU time it used (user +
system: on a shared machine the wall time also counts the wait for a core) and the ESS line.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

METHODS = ("RTN", "GPTQ", "AWQ")
BITS = (2.0, 3.0, 4.0, 8.0)


def files(root: Path) -> tuple[Path, Path]:
    """observed.csv (an fp16 row and five quantized rows of one new 8B model) and queries.csv
    (1,000 configurations of three sizes of that family)."""
    obs = pl.DataFrame(
        {
            "family": ["BenchFam"] * 6,
            "model": ["BenchFam-8B"] * 6,
            "params_b": [8.0] * 6,
            "method": ["fp16", "RTN", "GPTQ", "AWQ", "RTN", "GPTQ"],
            "w_bits": [16.0, 4.0, 3.0, 4.0, 8.0, 4.0],
            "group_size": [None, 128, 128, 128, 128, 128],
            "eval_set": ["wikitext2"] * 6,
            "ppl": [6.20, 6.55, 7.10, 6.40, 6.21, 6.38],
        }
    )
    rng = np.random.default_rng(0)
    n = 1000
    sizes = rng.choice([8.0, 1.5, 32.0], n)
    q = pl.DataFrame(
        {
            "family": ["BenchFam"] * n,
            "model": [f"BenchFam-{s:g}B" for s in sizes],
            "params_b": sizes,
            "method": rng.choice(METHODS, n),
            "w_bits": rng.choice(BITS, n),
            "group_size": rng.choice([32, 64, 128], n),
            "eval_set": ["wikitext2"] * n,
            "fp16_ppl": [6.2] * n,
        }
    )
    obs.write_csv(root / "observed.csv")
    q.write_csv(root / "queries.csv")
    return root / "observed.csv", root / "queries.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        obs, queries = files(root)
        base = [sys.executable, "-m", "qbayes", "predict", "--input", str(queries), "--output", str(root / "p.csv")]
        for label, cmd in (("plain", base), ("--observed", [*base, "--observed", str(obs)])):
            for i in range(args.repeat):
                t = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                if r.returncode:
                    sys.exit(r.stderr)
                ess = next((line for line in r.stderr.splitlines() if "effective sample size" in line), "")
                print(f"{label:>11} run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU  {ess}")


if __name__ == "__main__":
    main()
