"""How long `qbayes suggest` takes: 1,000 candidate runs x 100 targets (issue 24 asks for
under a minute, loading included).

Targets and candidates are made up from the fit's own levels and new ones: targets are
100 configurations of two families the fit has not seen and two it has; candidates are
1,000 runs of those families' models (sizes x methods x bits x group sizes x evaluation
sets). Prints the time of each phase in process, then the whole command as a user runs
it (a fresh interpreter: imports, reading the files, loading the fit, writing the output).

    python bench/bench_suggest.py --fit fits/hierarchical.nc [--candidates 1000 --targets 100 --budget 50]
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

FAMILIES = (
    ("Llama-2", "rmsnorm+swiglu", 2000.0),
    ("OPT", "layernorm+relu", 180.0),
    ("Llama-3", "rmsnorm+swiglu", 15000.0),
    ("Phi-3", "rmsnorm+swiglu", 3300.0),
)
SIZES = (1.0, 3.0, 7.0, 13.0, 34.0, 70.0)
METHODS = ("RTN", "GPTQ", "AWQ", "OmniQuant", "SmoothQuant")
BITS = (2.0, 3.0, 4.0, 8.0)
GROUPS = (128, 64, None)
EVAL_SETS = ("wikitext2", "c4", "ptb")


def grid() -> pl.DataFrame:
    rows = [
        {
            "family": f,
            "arch": a,
            "train_tokens_b": d,
            "model": f"{f}-{p:g}B",
            "params_b": p,
            "method": m,
            "w_bits": b,
            "group_size": g,
            "eval_set": e,
        }
        for (f, a, d), p, m, b, g, e in itertools.product(FAMILIES, SIZES, METHODS, BITS, GROUPS, EVAL_SETS)
    ]
    return pl.DataFrame(rows, schema_overrides={"group_size": pl.Int64})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", required=True)
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--budget", type=float, default=50.0, help="GPU hours")
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()

    from qbayes.model import fitfile
    from qbayes.model.predict import Predictor
    from qbayes.suggest.ranking import candidate_costs, rank, runs_table

    everything = grid()
    rng = np.random.default_rng(0)
    pick = rng.permutation(everything.height)
    targets_raw = everything[pick[: args.targets]]
    cands_raw = everything[pick[args.targets : args.targets + args.candidates]]

    times = {}
    t0 = time.perf_counter()
    fit = fitfile.load(args.fit)
    times["load fit"] = time.perf_counter() - t0
    t = time.perf_counter()
    targets = runs_table(targets_raw, where="targets")
    cands = runs_table(cands_raw, where="candidates")
    costs = candidate_costs(cands_raw, cands, where="candidates")
    times["tables and costs"] = time.perf_counter() - t
    t = time.perf_counter()
    r = rank(Predictor(fit, n_draws=args.draws), targets, cands, costs=costs, budget=args.budget)
    times["rank (draws, Gaussian, greedy)"] = time.perf_counter() - t
    times["total in process"] = time.perf_counter() - t0
    sel = r.selection
    print(
        f"{cands.height} candidates x {targets.height} targets, {args.draws} draws, budget {args.budget:g} GPU h: "
        f"{sel.order.size} runs chosen, {sel.cost.sum():.1f} GPU h, target variance "
        f"{sel.start:.3g} -> {sel.left[-1] if sel.left.size else sel.start:.3g}"
    )
    for k, v in times.items():
        print(f"  {k:32s} {v:7.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        tp, cp, out = Path(tmp) / "targets.csv", Path(tmp) / "candidates.csv", Path(tmp) / "ranked.csv"
        targets_raw.write_csv(tp)
        cands_raw.write_csv(cp)
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "qbayes",
                "suggest",
                "--targets",
                str(tp),
                "--candidates",
                str(cp),
                "--fit",
                args.fit,
                "--budget-gpu-hours",
                str(args.budget),
                "--output",
                str(out),
                "--draws",
                str(args.draws),
            ],
            check=True,
            capture_output=True,
        )
        print(f"  {'qbayes suggest (command)':32s} {time.perf_counter() - t:7.2f} s")


if __name__ == "__main__":
    main()
