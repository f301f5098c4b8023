"""Replay: do the runs `qbayes suggest` picks teach a family the fit has not seen faster
than runs picked at random?

Start from a fit without one family (``qbayes fit --exclude-family F``). Split the family's
published rows once, at random, into a pool (the runs one could collect) and a test set
(what one wants to predict: the targets). Then, step by step, add ``--batch`` rows of the
pool chosen by suggest (greedy batch, every run costing the same) or at random, and
update the posterior after each step; score the test rows' posterior predictive (median
absolute error of delta, CRPS, 90% coverage) after each step.

The update is not a refit (a fit per step and strategy would take hours here): it is the
Gaussian (Kalman) update that suggest itself assumes, applied to the posterior draws of
eta = ln(mu + shift) of the test and pool rows (qbayes.model.conditioning.observe_gaussian; an ensemble
square-root Kalman filter). The noise parameters are not updated. ``--refit`` checks it:
after the last step it refits the model to the training data plus the rows chosen by
suggest and by the first random seeds (``--refit-at``: after other numbers of runs too),
and scores the test rows from those fits.

    python bench/replay_suggest.py --fit fits/hier-noqwen3.nc --family Qwen3 \\
        --json reports/suggest-replay.json --plot reports/suggest-replay.svg [--refit]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.db import store
from qbayes.evaluation.crossval import QGRID, crps, scores
from qbayes.jsonsafe import json_safe
from qbayes.model import fitfile
from qbayes.model.conditioning import anomalies, effective_noise_var, likelihood_draws, observe_gaussian
from qbayes.model.encoding import family_tokens
from qbayes.model.mean import log_target
from qbayes.model.predict import DELTA_MAX, Predictor, row_quantiles
from qbayes.model.table import STANDARD, training_table
from qbayes.suggest.gpucost import Costs
from qbayes.suggest.ranking import greedy

COLLAPSE = 3.0  # nats: a perplexity ratio of 20, a broken model


@dataclass
class Replay:
    """The family's test rows first, then its pool, with the posterior's Gaussian over
    their eta (``mean``, anomalies ``anom``), noise, observed values and dof."""

    n_test: int
    mean: np.ndarray
    anom: np.ndarray
    noise_var: np.ndarray
    scale: np.ndarray
    nu: np.ndarray | None
    shift: float
    y: np.ndarray  # observed ln(delta + shift)
    delta: np.ndarray


def predictive_scores(r: Replay, mean: np.ndarray, anom: np.ndarray, *, seed: int) -> dict:
    """Scores of the test rows' posterior predictive from the Gaussian (mean, anom): its
    draws of eta plus Student-t noise with each draw's scale and dof. The noise variates
    are the same at every call (common random numbers), so curves differ only by eta."""
    t, s = r.n_test, anom.shape[1]
    eta = mean[:t, None] + np.sqrt(s) * anom[:t]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t, s)) if r.nu is None else rng.standard_t(np.broadcast_to(r.nu, (t, s)))
    y = np.minimum(eta + r.scale[:t] * z, np.log(DELTA_MAX + r.shift))
    return {
        **graded_scores(r.delta[:t], row_quantiles(np.exp(y) - r.shift, QGRID), r.shift),
        "var_eta": float(np.einsum("ij,ij->", anom[:t], anom[:t])),
    }


def graded_scores(delta: np.ndarray, q: np.ndarray, shift: float) -> dict:
    """The validation's scores of delta (crossval.scores), the CRPS of ln(delta + shift)
    (the scale suggest's variances are on: relative error, not dominated by collapses),
    and the CRPS of delta on the rows that collapsed (delta >= COLLAPSE nats) and the rest."""
    out = scores(delta, q)
    out["crps_log"] = crps(np.log(np.maximum(delta, -shift / 2) + shift), np.log(np.maximum(q, -shift / 2) + shift))
    big = delta >= COLLAPSE
    out["crps_collapsed"] = crps(delta[big], q[:, big]) if big.any() else None
    out["crps_rest"] = crps(delta[~big], q[:, ~big])
    return out


def run_strategy(r: Replay, *, pick, steps: int, batch: int, seed: int) -> tuple[list[dict], list[int]]:
    """Curve of scores after 0, batch, 2 batch, ... added pool rows, and the rows added
    (pool indices, in order). ``pick(mean, anom, remaining)`` returns the next batch."""
    mean, anom = r.mean, r.anom
    remaining = list(range(r.n_test, r.mean.size))
    chosen: list[int] = []
    curve = [{"runs": 0, **predictive_scores(r, mean, anom, seed=seed)}]
    for _ in range(steps):
        take = pick(mean, anom, remaining)[:batch]
        mean, anom = observe_gaussian(mean, anom, take, r.y[take], r.noise_var[take])
        chosen += take
        remaining = [i for i in remaining if i not in set(take)]
        curve.append({"runs": len(chosen), **predictive_scores(r, mean, anom, seed=seed)})
    return curve, [c - r.n_test for c in chosen]


def suggest_pick(r: Replay, batch: int):
    def pick(mean, anom, remaining):
        rows = list(range(r.n_test)) + remaining
        sel = greedy(
            anom=anom[rows],
            n_targets=r.n_test,
            noise_var=r.noise_var[remaining],
            weights=np.ones(r.n_test),
            costs=Costs(own=np.ones(len(remaining))),
            max_runs=batch,
            min_share=0.0,
        )
        return [remaining[i] for i in sel.order]

    return pick


def random_pick(rng: np.random.Generator):
    def pick(mean, anom, remaining):
        return [int(i) for i in rng.permutation(remaining)]

    return pick


def runs_to_reach(curve: list[dict], level: float, key: str) -> int | None:
    """The fewest runs from which on ``key`` stays at or below ``level`` to the end of the
    curve (None: it ends above)."""
    out = None
    for c in reversed(curve):
        if c[key] is None or c[key] > level:
            break
        out = c["runs"]
    return out


def fit_provenance(fit) -> dict:
    """What the starting fit was: model, rows, how it was sampled and how well it converged."""
    conv = fit.info.convergence
    return {
        "fit_model": fit.spec.name,
        "fit_rows": fit.data.height,
        "fit_command": fit.info.command,
        "fit_sampling": dataclasses.asdict(fit.info.sample_config),
        "fit_convergence": {k: getattr(conv, k) for k in ("max_rhat", "min_ess_bulk", "divergences")},
    }


def curve_of(result: dict, name: str) -> list[dict]:
    if name == "suggest":
        return result["suggest"]["curve"]
    return next(r["curve"] for r in result["random"] if f"random_{r['seed']}" == name)


def refit_scores(train: pl.DataFrame, added: pl.DataFrame, test: pl.DataFrame, spec, *, draws: int, seed: int):
    from qbayes.model.fit import FitOptions, fit_table
    from qbayes.model.samplers import SampleConfig

    opts = FitOptions(sample=SampleConfig(draws=draws, tune=draws, chains=2, seed=seed, progress=False))
    t0 = time.time()
    fit = fit_table(pl.concat([train, added], how="vertical_relaxed"), spec, opts)
    predictor = Predictor(fit, n_draws=None, seed=seed)
    delta = predictor.delta(predictor.prepare(test))
    out = graded_scores(test.get_column("delta").to_numpy(), row_quantiles(delta, QGRID), spec.log_shift)
    out["fit_s"] = round(time.time() - t0, 1)
    out["max_rhat"] = fit.info.convergence.max_rhat
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 4)
    for ax, key, label in zip(
        axes,
        ("mdae", "crps_log", "crps", "var_eta"),
        (
            "median abs. error of delta (nats)",
            "CRPS of ln(delta + 0.01)",
            "CRPS of delta (nats)",
            "test rows' posterior var of eta (sum)",
        ),
    ):
        runs = [c["runs"] for c in result["suggest"]["curve"]]
        rand = np.array([[c[key] for c in r["curve"]] for r in result["random"]])
        ax.fill_between(runs, rand.min(axis=0), rand.max(axis=0), color="0.85", label="random (range)")
        ax.plot(runs, rand.mean(axis=0), color="0.4", label=f"random (mean of {len(rand)})")
        ax.plot(runs, [c[key] for c in result["suggest"]["curve"]], color="C3", lw=2, label="suggest")
        for check in result.get("refit_check", []):
            if key in check["refit"]:
                ours = check["strategy"] == "suggest"
                ax.plot(
                    check["runs"],
                    check["refit"][key],
                    "D" if ours else "o",
                    ms=6,
                    color="C3" if ours else "0.4",
                    mfc="white" if ours else "none",
                    label=("refit: suggest" if ours else "refit: random") if key == "mdae" else None,
                )
        ax.set_xlabel(f"{result['family']} runs added")
        ax.set_title(label, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    keep = {lab: h for h, lab in zip(handles, labels)}  # one entry per label
    axes[0].legend(keep.values(), keep.keys(), fontsize=8)
    fig.suptitle(
        f"Replay on {result['family']} ({result['n_test']} test rows, pool {result['n_pool']}; "
        f"fit {result['fit_model']} without {result['family']}; Kalman update of the draws)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)


@dataclass
class Split:
    """One replay's JSON record and the rows it split the family into."""

    record: dict
    test: pl.DataFrame
    pool: pl.DataFrame


def replay_split(fit, rows: pl.DataFrame, args, *, seed: int) -> Split:
    """One replay: split the family's rows with ``seed``, run suggest and the random
    seeds, and summarise."""
    perm = np.random.default_rng(seed).permutation(rows.height)
    n_test = int(round(args.test_share * rows.height))
    test, pool = rows[perm[:n_test]], rows[perm[n_test:]]
    table = pl.concat([test, pool]).select(list(STANDARD))
    pd = likelihood_draws(Predictor(fit, n_draws=args.draws, seed=seed), table)
    delta = pl.concat([test, pool]).get_column("delta").to_numpy()
    r = Replay(
        n_test=n_test,
        mean=pd.eta.mean(axis=1),
        anom=anomalies(pd.eta),
        noise_var=effective_noise_var(scale=pd.scale, nu=pd.nu),
        scale=np.asarray(pd.scale),
        nu=pd.nu,
        shift=pd.log_shift,
        y=log_target(delta, pd.log_shift),
        delta=delta,
    )

    sug_curve, sug_rows = run_strategy(
        r, pick=suggest_pick(r, args.batch), steps=args.steps, batch=args.batch, seed=seed
    )
    randoms = []
    for k in range(args.random_seeds):
        curve, picked = run_strategy(
            r, pick=random_pick(np.random.default_rng(1000 + k)), steps=args.steps, batch=args.batch, seed=seed
        )
        randoms.append({"seed": 1000 + k, "curve": curve, "rows": picked})
    keys = ("mdae", "crps", "crps_log", "cov90", "crps_collapsed", "crps_rest")
    final = {key: float(np.mean([c["curve"][-1][key] for c in randoms])) for key in keys}
    return Split(
        {
            "fit_draws": int(pd.eta.shape[1]),
            "n_test": n_test,
            "n_pool": pool.height,
            "batch": args.batch,
            "steps": args.steps,
            "split_seed": seed,
            "update": "Gaussian (ensemble square-root Kalman) update of the draws of eta = ln(mu + shift); "
            "noise parameters fixed; observation noise: effective_noise_var",
            "suggest": {"curve": sug_curve, "rows": sug_rows},
            "random": randoms,
            "summary": {
                "test_rows_collapsed": int((delta[:n_test] >= COLLAPSE).sum()),
                "start": {k: sug_curve[0][k] for k in keys},
                "random_final_mean": final,
                "suggest_final": {k: sug_curve[-1][k] for k in keys},
                "runs": args.batch * args.steps,
                "suggest_runs_to_random_final": {
                    k: runs_to_reach(sug_curve, final[k], k) for k in keys if k != "cov90"
                },
                "random_seeds_beaten_at_final": {
                    k: int(sum(sug_curve[-1][k] < c["curve"][-1][k] for c in randoms)) for k in keys if k != "cov90"
                },
            },
            "suggested_runs": pool[sug_rows]
            .select("model", "method", "w_bits", "group_size", "eval_set", "delta")
            .to_dicts(),
        },
        test,
        pool,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", help="fit without --family")
    ap.add_argument("--family")
    ap.add_argument("--data", default="data")
    ap.add_argument("--test-share", type=float, default=1 / 3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--random-seeds", type=int, default=10)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="seeds the split of the family's rows and the draws")
    ap.add_argument("--splits", type=int, default=1, help="also replay this many splits in all (summaries)")
    ap.add_argument("--refit", action="store_true", help="check the Kalman updates with real refits")
    ap.add_argument("--refit-at", type=int, nargs="*", help="after this many runs (default: the last step)")
    ap.add_argument("--refit-random", type=int, default=1, help="random seeds refitted")
    ap.add_argument("--refit-draws", type=int, default=500)
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--plot-only", metavar="JSON", help="draw --plot from a replay's JSON, run nothing")
    args = ap.parse_args()
    if args.plot_only:
        with open(args.plot_only) as fh:
            plot(json.load(fh), args.plot)
        return

    if not (args.fit and args.family):
        ap.error("--fit and --family are required")
    t0 = time.time()
    fit = fitfile.load(args.fit)
    if args.family in set(fit.data["family"]):
        raise SystemExit(f"{args.fit} was fitted with {args.family}: refit with --exclude-family {args.family}")
    everything = training_table(store.load(args.data), rows=fit.spec.rows)
    rows = everything.filter(pl.col("family") == args.family)
    if fit.spec.tokens == "family":
        rows = family_tokens(rows)
    main_split = replay_split(fit, rows, args, seed=args.seed)
    test, pool = main_split.test, main_split.pool
    result = {
        "command": " ".join(["python", *sys.argv]),
        "family": args.family,
        "fit": args.fit,
        **fit_provenance(fit),
        **main_split.record,
    }
    if args.splits > 1:  # further random splits of the family's rows: summaries only
        result["splits"] = [{"split_seed": args.seed, **result["summary"]}] + [
            {"split_seed": k, **replay_split(fit, rows, args, seed=k).record["summary"]}
            for k in range(args.seed + 1, args.seed + args.splits)
        ]
    if args.refit:
        train = everything.filter(pl.col("family") != args.family)
        checks = {
            "suggest": result["suggest"]["rows"],
            **{f"random_{r['seed']}": r["rows"] for r in result["random"][: args.refit_random]},
        }
        result["refit_check"] = [
            {
                "runs": n,
                "strategy": name,
                "kalman": next(c for c in curve_of(result, name) if c["runs"] == n),
                "refit": refit_scores(train, pool[picked[:n]], test, fit.spec, draws=args.refit_draws, seed=args.seed),
            }
            for n in (args.refit_at or [args.batch * args.steps])
            for name, picked in checks.items()
        ]
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result["summary"], indent=1))
    for split in result.get("splits", []):
        print(
            f"split {split['split_seed']}: MdAE start {split['start']['mdae']:.3f}, random "
            f"{split['random_final_mean']['mdae']:.3f}, suggest {split['suggest_final']['mdae']:.3f}"
        )
    if "refit_check" in result:
        print(json.dumps(result["refit_check"], indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(json_safe(result), fh, indent=1)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
