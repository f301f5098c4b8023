"""Benchmark `qbayes fit` on the shipped data and `qbayes predict` on 100,000 queries.

Prints, for each sampler: wall time including compilation, minimum bulk ESS, ESS per
wall-second, max R-hat and divergences; the ratio of each to PyMC's default sampler; and
the time to predict 100,000 query rows. Usage:

    python bench/bench_fit.py [--samplers nutpie pymc numpyro blackjax] [--draws 1000 --tune 1000]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import polars as pl

from qbayes.db import store
from qbayes.model.fit import FitOptions, fit_database
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table
from qbayes.model.samplers import SampleConfig
from qbayes.model.spec import load_spec

JAX_SAMPLERS = ("numpyro", "blackjax")


def bench_fit(samplers, draws, tune, chains, seed):
    db = store.load("data")
    spec = load_spec("hierarchical")
    rows, fits = [], {}
    for name in samplers:
        if name in JAX_SAMPLERS and importlib.util.find_spec("jax") is None:
            print(f"{name}: skipped (pip install 'qbayes[jax]')")
            continue
        t0 = time.perf_counter()
        fit = fit_database(
            db,
            spec,
            FitOptions(
                sampler=name, sample=SampleConfig(draws=draws, tune=tune, chains=chains, seed=seed, progress=False)
            ),
        )
        wall = time.perf_counter() - t0
        c = fit.info.convergence
        rows.append(
            {
                "sampler": name,
                "wall_s": wall,
                "compile_s": fit.info.compile_s,
                "min_ess_bulk": c.min_ess_bulk,
                "ess_per_s": c.min_ess_bulk / wall,
                "max_rhat": c.max_rhat,
                "divergences": c.divergences,
            }
        )
        fits[name] = fit
    df = pl.DataFrame(rows)
    if "pymc" in df["sampler"].to_list():
        ref = df.filter(pl.col("sampler") == "pymc").row(0, named=True)
        df = df.with_columns(
            (pl.col("ess_per_s") / ref["ess_per_s"]).alias("ess_per_s_vs_pymc"),
            (pl.col("wall_s") / ref["wall_s"]).alias("wall_vs_pymc"),
        )
    return df, fits


def bench_predict(fit, n=100_000, draws=1000, seed=0):
    rng = np.random.default_rng(seed)
    fams = list(fit.encoding.levels["family"]) + ["UnseenFamily"]
    methods = list(fit.encoding.levels["method"])
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
    ap.add_argument("--samplers", nargs="+", default=["nutpie", "pymc", "numpyro", "blackjax"])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()
    df, fits = bench_fit(args.samplers, args.draws, args.tune, args.chains, args.seed)
    with pl.Config(tbl_cols=20, tbl_width_chars=200, float_precision=3):
        print(
            f"qbayes fit on the shipped data, {args.chains} chains x ({args.tune} tune + {args.draws} draws), "
            f"target_accept {SampleConfig().target_accept}:"
        )
        print(df)
    fit = fits.get("nutpie") or next(iter(fits.values()))
    secs, n = bench_predict(fit)
    print(f"qbayes predict: {n} query rows x 1000 posterior draws in {secs:.2f} s")


if __name__ == "__main__":
    main()
