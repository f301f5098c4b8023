"""Benchmark `qbayes fit` on the shipped data, cold and warm, and `qbayes predict` on 100,000 queries.

Each sampler fits the default model twice, each time in a fresh Python process: first with
empty compile caches (PyTensor's base_compiledir, which also holds its numba cache, and
numba's own cache pointed at new temporary folders), as a user's first fit runs; then again
with the caches the first run left. For each run it prints the wall time of the fit
(compile and sampling apart), the minimum bulk and tail ESS, ESS per wall-second, max R-hat
and divergences; then each sampler's ESS per second as a multiple of PyMC's own NUTS, cold
and warm; then the time to predict 100,000 query rows. Usage:

    python bench/bench_fit.py [--samplers nutpie pymc] [--draws 1000 --tune 300] [--model hierarchical]

PyMC's own NUTS tunes ``--pymc-tune`` steps (1,000, its default) whatever ``--tune`` says.

Run it on a quiet machine (check ``uptime``) and say the load with the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

JAX_SAMPLERS = ("numpyro", "blackjax")


def one_fit(sampler: str, model: str, draws: int, tune: int, chains: int, seed: int) -> dict:
    """Fit once in this process and return its figures (the child side of :func:`timed_fit`)."""
    from qbayes.db import store
    from qbayes.model.fit import FitOptions, fit_database
    from qbayes.model.samplers import SampleConfig
    from qbayes.model.spec import load_spec

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = SampleConfig(draws=draws, tune=tune, chains=chains, seed=seed, progress=False)
    fit = fit_database(store.load("data"), load_spec(model), FitOptions(sampler=sampler, sample=cfg))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    c = fit.info.convergence
    return {
        "wall_s": wall,
        # CPU-seconds of this process, sampler threads included (PyMC's worker processes are
        # not): on a loaded machine wall time grows with the load, CPU time much less
        "cpu_s": cpu,
        "compile_s": fit.info.compile_s,
        "sample_s": fit.info.sample_s,
        "min_ess_bulk": c.min_ess_bulk,
        "min_ess_tail": c.min_ess_tail,
        "ess_per_s": c.min_ess_bulk / wall,
        "max_rhat": c.max_rhat,
        "divergences": c.divergences,
        "rounds": fit.info.rounds,  # 1 + the rounds of fresh chains the diagnostics asked for
    }


def timed_fit(sampler: str, caches: Path, args) -> dict:
    """One fit in a fresh process whose compile caches live under ``caches``; the process's
    wall time (imports included) is ``process_s``."""
    env = {
        **os.environ,
        # base_compiledir, not compiledir: PyTensor keeps its numba cache in base_compiledir/numba
        "PYTENSOR_FLAGS": f"base_compiledir={caches / 'pytensor'}",
        "NUMBA_CACHE_DIR": str(caches / "numba"),
    }
    cmd = [sys.executable, __file__, "--child", sampler, "--model", args.model]
    cmd += [
        "--draws",
        str(args.draws),
        "--tune",
        str(args.pymc_tune if sampler == "pymc" else args.tune),
        "--chains",
        str(args.chains),
        "--seed",
        str(args.seed),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return {**figures, "process_s": time.perf_counter() - t0}


def bench_fit(args) -> pl.DataFrame:
    rows = []
    for name in args.samplers:
        if name in JAX_SAMPLERS and importlib.util.find_spec("jax") is None:
            print(f"{name}: skipped (pip install 'qbayes[jax]')")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as caches:
            for run in args.runs:
                rows.append({"sampler": name, "run": run, **timed_fit(name, Path(caches), args)})
                print(json.dumps(rows[-1]), flush=True)  # each run as it ends: a long bench can be stopped
    df = pl.DataFrame(rows)
    if "pymc" in df["sampler"].to_list():
        ref = df.filter(pl.col("sampler") == "pymc").select("run", pl.col("ess_per_s").alias("pymc_ess_per_s"))
        df = df.join(ref, on="run", how="left").with_columns(
            (pl.col("ess_per_s") / pl.col("pymc_ess_per_s")).alias("ess_per_s_vs_pymc")
        )
    return df.drop("pymc_ess_per_s", strict=False)


def bench_predict(fit, n=100_000, draws=1000, seed=0):
    from qbayes.model.predict import Predictor
    from qbayes.model.queries import query_table

    rng = np.random.default_rng(seed)
    fams = list(fit.encoding.levels["family"]) + ["UnseenFamily"]
    methods = [m for m in fit.encoding.levels["method"] if not m.startswith("llama.cpp")]
    q = pl.DataFrame(
        {
            "family": rng.choice(fams, n),
            "model": [f"m{i % 500}" for i in range(n)],
            "params_b": np.exp(rng.uniform(np.log(0.1), np.log(200), n)),
            "train_tokens_b": rng.choice([180.0, 1000.0, 2000.0, 15000.0], n),
            "method": rng.choice(methods, n),
            "w_bits": rng.choice([2.0, 3.0, 4.0, 8.0], n),
            "group_size": rng.choice([64, 128], n),
            "act_bits": np.full(n, 16.0),
            "eval_set": rng.choice(["wikitext2", "c4"], n),
            "fp16_ppl": rng.uniform(4, 30, n),
        }
    )
    t0 = time.perf_counter()
    table = query_table(q)
    pred = Predictor(fit, n_draws=draws, seed=seed).predict(table)
    return time.perf_counter() - t0, pred.height


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samplers", nargs="+", default=["nutpie", "pymc"])
    ap.add_argument("--model", default="hierarchical")
    ap.add_argument("--draws", type=int, default=None, help="default: qbayes fit's")
    ap.add_argument("--tune", type=int, default=None, help="default: qbayes fit's")
    ap.add_argument("--chains", type=int, default=None, help="default: qbayes fit's")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument(
        "--runs", nargs="+", choices=["cold", "warm"], default=["cold", "warm"], help="cold, then warm on its caches"
    )
    ap.add_argument(
        "--pymc-tune", type=int, default=1000, help="PyMC's tuning steps (its own default: its adaptation needs them)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one fit, figures as JSON
    ap.add_argument("--no-predict", action="store_true", help="skip the prediction benchmark")
    args = ap.parse_args()
    from qbayes.model.samplers import SampleConfig

    defaults = SampleConfig()
    args.draws = args.draws or defaults.draws
    args.tune = args.tune or defaults.tune
    args.chains = args.chains or defaults.chains
    if args.child:
        print(json.dumps(one_fit(args.child, args.model, args.draws, args.tune, args.chains, args.seed)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    df = bench_fit(args)
    with pl.Config(tbl_cols=20, tbl_width_chars=220, float_precision=3):
        print(
            f"qbayes fit of model {args.model} on the shipped data, {args.chains} chains x ({args.tune} tune + "
            f"{args.draws} draws), target_accept {defaults.target_accept}; cold: empty compile caches, "
            "warm: the caches the cold run left; each in a fresh process (process_s includes imports); "
            f"pymc tunes {args.pymc_tune} steps:"
        )
        print(df)
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    if "ess_per_s_vs_pymc" in df.columns:
        for r in df.filter(pl.col("sampler") != "pymc").iter_rows(named=True):
            print(f"{r['sampler']} {r['run']}: {r['ess_per_s_vs_pymc']:.1f}x PyMC's NUTS in bulk ESS per wall-second")
    if not args.no_predict:
        from qbayes.model import fitfile
        from qbayes.resources import CHECKOUT, SHIPPED_FIT

        secs, n = bench_predict(fitfile.load(CHECKOUT / "data" / SHIPPED_FIT))
        print(f"qbayes predict: {n} query rows x 1000 posterior draws in {secs:.2f} s (the shipped posterior)")


if __name__ == "__main__":
    main()
