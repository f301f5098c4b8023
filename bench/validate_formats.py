"""Leave one model's named-format rows out: how well does each model spec predict a llama.cpp
sweep (Q2_K ... Q8_0) of a model whose other rows it has, from the sweeps of the other
models? Against the per-format median of the other models' rows of that format (the
baseline of issue 33), which needs the format's name and knows nothing else.

For each model with rows that name a format (the shipped data: LLaMA-7B, LLaMA-13B,
Llama-2-70B), every spec is fitted to all published rows but that model's named-format
rows, which are then predicted as ``qbayes validate`` predicts held-out rows (as one new
source: a study of unknown protocol) and scored on delta: median absolute error of the
median, 90% coverage, CRPS (qbayes.evaluation.crossval.scores). The baseline is a point
prediction: its median error only. A spec with format effects is scored twice from one fit:
as it is, and with the held-out rows' format names left out ("... without names"), which is
the bits-per-weight law its method and family effects give: what the format effects add,
without a second fit.

    python bench/validate_formats.py --model models/hierarchical-v3a.toml \\
        --model models/hierarchical-v3f.toml --json reports/validation-formats.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import polars as pl

from qbayes.db import store
from qbayes.evaluation.crossval import QGRID, bayes_quantiles, scores
from qbayes.jsonsafe import json_safe
from qbayes.model.encoding import family_tokens
from qbayes.model.fit import FitOptions, fit_table
from qbayes.model.samplers import SampleConfig
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table

BASELINE = "per-format median"
MEDIAN = int(np.argmin(np.abs(QGRID - 0.5)))  # the median's row in the quantile grid


def per_format_median(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
    """Each test row's prediction: the median delta of the training rows of its format
    (NaN for a format no training row has)."""
    med = train.filter(pl.col("format").is_not_null()).group_by("format").agg(pl.col("delta").median())
    return test.join(med, on="format", how="left", maintain_order="left").get_column("delta_right").to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="model spec (repeatable)")
    ap.add_argument("--data", default="data")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    opts = FitOptions(
        sample=SampleConfig(draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed, progress=False)
    )
    specs = [load_spec(m) for m in args.model]
    # every spec here reads training tokens per family (spec tokens = "family"): the held-out
    # rows get their family's, as the fit's own rows do
    table = family_tokens(training_table(store.load(args.data), rows=specs[0].rows))
    named = pl.col("format").is_not_null()
    held_models = sorted(table.filter(named)["model"].unique().to_list())
    rows = []  # (held-out model, predictor, y, median, quantiles or None)
    for held in held_models:
        out = named & (pl.col("model") == held)
        train, test = table.filter(~out), table.filter(out)
        y = test.get_column("delta").to_numpy()
        rows.append((held, BASELINE, y, per_format_median(train, test), None))
        for spec in specs:
            t0 = time.perf_counter()
            fit = fit_table(train, spec, opts)
            q, _ = bayes_quantiles(fit, test, seed=args.seed)
            conv = fit.info.convergence
            print(
                f"{held}: {spec.name} fitted in {time.perf_counter() - t0:.0f} s "
                f"(max R-hat {conv.max_rhat:.3f}, {conv.divergences} divergences)",
                flush=True,
            )
            rows.append((held, spec.name, y, q[MEDIAN], q))
            if "format" in spec.effects:
                q, _ = bayes_quantiles(fit, test.with_columns(pl.lit(None, pl.String).alias("format")), seed=args.seed)
                rows.append((held, f"{spec.name} without names", y, q[MEDIAN], q))
    report = {"held_out": held_models, "per_model": [], "overall": []}
    for name in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == name]
        for held, _, y, med, q in mine:
            report["per_model"].append({"model": name, "held_out": held, **_scores(y, med, q)})
        y = np.concatenate([r[2] for r in mine])
        med = np.concatenate([r[3] for r in mine])
        q = None if mine[0][4] is None else np.concatenate([r[4] for r in mine], axis=1)
        report["overall"].append({"model": name, **_scores(y, med, q)})
    report["settings"] = {**dataclasses.asdict(opts.sample), "specs": [s.name for s in specs]}
    for r in report["overall"]:
        print(
            f"{r['model']:>22}: n {r['n']}, MdAE {r['mdae']:.4f}"
            + ("" if r.get("cov90") is None else f", 90% coverage {r['cov90']:.3f}, CRPS {r['crps']:.4f}")
        )
    for r in report["per_model"]:
        print(f"{r['model']:>22} {r['held_out']:>12}: n {r['n']}, MdAE {r['mdae']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(json_safe(report), f, indent=1)


def _scores(y: np.ndarray, med: np.ndarray, q: np.ndarray | None) -> dict:
    if q is not None:
        return dataclasses.asdict(scores(y, q))
    ok = ~np.isnan(med)
    return {"n": int(ok.sum()), "mdae": float(np.median(np.abs(y[ok] - med[ok])))}


if __name__ == "__main__":
    main()
