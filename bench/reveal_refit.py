"""Is a revealed row's lesson the fast update's or the model's? For each forward fold: the fit
without the held-out family (K = 0), the fast update on K revealed rows per model
(conditioning.condition, as ``qbayes validate --reveal`` does) and a refit with those rows, all
scored on the same hidden rows (docs/observed.md, "Why one revealed row does not lower the
error").

    python bench/reveal_refit.py --model models/hierarchical-v3a.toml --fits fits/reveal [--family Qwen3]

Fits are kept in ``--fits`` (base-FAMILY.nc, refit-RULE-K-FAMILY.nc) and reused on a rerun.
Prints per fold and overall MdAE, median 90% width and 90% coverage (all rows; rows of 3 or
more bits), the update's ESS, and how far the fast update's medians are from the refit's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from qbayes.db import store
from qbayes.evaluation import crossval
from qbayes.evaluation.crossval import QGRID, _qidx, bayes_quantiles, coverage
from qbayes.model import fitfile
from qbayes.model.encoding import family_tokens
from qbayes.model.fit import FitOptions, fit_table
from qbayes.model.predict import Predictor, row_quantiles
from qbayes.model.samplers import SampleConfig
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table

# a held-out family's published sources stay new sources of their own, as validate reads them
HELD_OUT_SOURCE = pl.concat_str(pl.lit("held-out "), pl.col("source").fill_null("")).alias("source")


def fit_once(path: Path, rows: pl.DataFrame, spec, opts: FitOptions) -> fitfile.Fit:
    if not path.exists():
        fitfile.save(fit_table(rows, spec, opts), path)
    return fitfile.load(path)


def line(label: str, y: np.ndarray, q: np.ndarray, bits: np.ndarray, ess: float | None = None) -> str:
    parts = []
    for keep in (np.ones(y.size, dtype=bool), bits >= 3):
        yy, qq = y[keep], q[:, keep]
        mdae = np.median(np.abs(yy - qq[_qidx(0.5)]))
        width = np.median(qq[_qidx(0.95)] - qq[_qidx(0.05)])
        parts.append(f"MdAE {mdae:.4f}  width {width:.3f}  cov {coverage(yy, qq, 0.9):.2f}")
    return f"{label:<22} n={y.size:4d}  {parts[0]}  | >=3 bits: {parts[1]}" + (f"  ESS {ess:.0f}" if ess else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/hierarchical-v3a.toml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--fits", type=Path, required=True)
    ap.add_argument("--family", action="append", default=[], help="only these held-out families")
    ap.add_argument("--rule", default="nearest4", choices=crossval.REVEAL_RULES)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    args = ap.parse_args()
    args.fits.mkdir(parents=True, exist_ok=True)
    spec = load_spec(args.model)
    db = store.load_paths((args.data,))
    table = training_table(db, rows=spec.rows)
    folds = crossval.make_folds(
        table["family"], scheme="forward", released=crossval.family_release(db.models), only=args.family
    )
    sample = SampleConfig(draws=args.draws, tune=args.tune, chains=args.chains, seed=0, progress=False)
    opts = FitOptions(sample=sample)
    pooled: dict[str, list] = {"K = 0": [], "fast update": [], "refit": []}
    for fold in folds:
        fam = fold.family
        train = table.filter(pl.col("family").is_in(list(fold.train)))
        held = family_tokens(table.filter(pl.col("family") == fam))
        shown = crossval.reveal_mask(held, args.k, args.rule)
        if not shown.any():
            print(f"{fam}: no row revealed by rule {args.rule}")
            continue
        test = held.filter(pl.Series(~shown))
        y, bits = test["delta"].to_numpy(), test["w_bits"].cast(pl.Float64).to_numpy()
        base = fit_once(args.fits / f"base-{fam}.nc", train, spec, opts)
        revealed = held.filter(pl.Series(shown))
        refit = fit_once(
            args.fits / f"refit-{args.rule}-{args.k}-{fam}.nc",
            pl.concat([train, revealed.with_columns(HELD_OUT_SOURCE)], how="vertical_relaxed"),
            spec,
            opts,
        )
        q0, _ = bayes_quantiles(base, test, seed=0)
        q1, ess = bayes_quantiles(base, test, seed=0, revealed=revealed)
        predictor = Predictor(refit, n_draws=None, seed=0)
        rows = predictor.prepare(test.drop("delta", "doubt", strict=False).with_columns(HELD_OUT_SOURCE))
        qr = row_quantiles(predictor.delta(rows), QGRID)
        print(f"{fam} ({revealed.height} rows revealed)")
        for label, q, e in (("K = 0", q0, None), ("fast update", q1, ess), ("refit", qr, None)):
            print("  " + line(label, y, q, bits, e))
            pooled[label].append((y, bits, q))
        gap = np.median(np.abs(q1[_qidx(0.5)] - qr[_qidx(0.5)]))
        print(f"  median |fast - refit| of the predictive medians: {gap:.4f}")
    if pooled["refit"]:
        print("all folds")
        for label, parts in pooled.items():
            y, bits, q = (np.concatenate(p, axis=-1) for p in zip(*parts))
            print("  " + line(label, y, q, bits))


if __name__ == "__main__":
    main()
