"""Why a default fit needs hundreds of leapfrog steps per draw: the same model with parts of
its geometry taken away.

The default model's draws each take a full NUTS tree of depth 8-9 (255-511 gradient steps),
which is what keeps `qbayes fit` at minutes rather than the 60 s issue 3 asks for. This
script samples the default model on the shipped data, and variants of it in which
``pm.do`` fixes what may cause the depth:

* ``as-is``: the model as `qbayes fit` samples it;
* ``dof``: the Student-t dof fixed at 30 (nearly normal noise, no heavy-tail curvature);
* ``sds``: every group sd fixed at 0.3 (no sd x z funnels);
* ``dof+sds``: both;
* ``dof+sds+dense``: both, with a dense mass matrix (linear correlations taken out).

For each it prints the median and mean leapfrog steps per draw, the adapted step size,
divergences, wall time and convergence. Sampling is numpyro's NUTS (``pip install
'qbayes[jax]'``), the only sampler here with a dense mass matrix. Usage:

    python bench/bench_geometry.py [--variants as-is dof sds dof+sds dof+sds+dense] [--draws 200 --tune 200]

A dense mass matrix needs a long warm-up to be estimated (165 free parameters): give
``--dense-tune 800``; with 200 tuning draws its adaptation fails and every draw hits the
maximum depth.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings

import numpy as np

VARIANTS = ("as-is", "dof", "sds", "dof+sds", "dof+sds+dense")
FIXED_DOF = 30.0
FIXED_SD = 0.3


def build(spec_name: str = "hierarchical"):
    from qbayes.db import store
    from qbayes.model.covariates import covariates
    from qbayes.model.fit import prepare
    from qbayes.model.graph import build_model
    from qbayes.model.spec import load_spec
    from qbayes.model.table import training_table

    spec = load_spec(spec_name)
    df, enc = prepare(training_table(store.load("data"), rows=spec.rows), spec)
    return build_model(spec, covariates(enc.read(df)), enc, df.get_column("delta").to_numpy())


def variant_model(model, variant: str):
    """The model with the parts ``variant`` names fixed (pm.do)."""
    import pymc as pm

    parts = set(variant.split("+")) - {"as-is", "dense"}
    fix = {}
    if "dof" in parts:
        fix["nu"] = FIXED_DOF
    if "sds" in parts:
        fix.update({v.name: FIXED_SD for v in model.free_RVs if v.name.startswith("sd_")})
    return pm.do(model, fix) if fix else model


def run(model, variant: str, *, draws: int, tune: int, chains: int, seed: int, target_accept: float) -> dict:
    import pymc as pm

    from qbayes.model import diagnostics
    from qbayes.model.samplers import _to_tree

    t0 = time.perf_counter()
    with variant_model(model, variant):
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=min(chains, 2),
            random_seed=seed,
            progressbar=False,
            target_accept=target_accept,
            nuts_sampler="numpyro",
            compute_convergence_checks=False,
            nuts_sampler_kwargs={"chain_method": "parallel", "nuts_kwargs": {"dense_mass": variant.endswith("dense")}},
        )
    wall = time.perf_counter() - t0
    ss = idata.sample_stats
    conv = diagnostics.check(_to_tree(idata))
    return {
        "variant": variant,
        "steps_median": float(np.median(ss.n_steps)),
        "steps_mean": float(ss.n_steps.mean()),
        "step_size": float(ss.step_size.mean()),
        "divergences": int(ss.diverging.sum()),
        "wall_s": wall,
        "tune": tune,
        "max_rhat": conv.max_rhat,
        "min_ess_bulk": conv.min_ess_bulk,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--tune", type=int, default=200)
    ap.add_argument("--dense-tune", type=int, default=800, help="tuning draws of the dense-mass variant")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target-accept", type=float, default=0.95)
    args = ap.parse_args()
    if importlib.util.find_spec("numpyro") is None:
        raise SystemExit("bench_geometry needs numpyro: pip install 'qbayes[jax]'")
    warnings.filterwarnings("ignore")
    model = build()
    print(
        f"{'variant':<15} {'tune':>5} {'steps med':>9} {'mean':>7} {'step size':>9} {'div':>4} {'wall s':>7} "
        f"{'max R-hat':>9} {'min ESS':>7}"
    )
    for v in args.variants:
        tune = args.dense_tune if v.endswith("dense") else args.tune
        r = run(
            model, v, draws=args.draws, tune=tune, chains=args.chains, seed=args.seed, target_accept=args.target_accept
        )
        print(
            f"{r['variant']:<15} {r['tune']:>5} {r['steps_median']:>9.0f} {r['steps_mean']:>7.1f} "
            f"{r['step_size']:>9.4f} {r['divergences']:>4} {r['wall_s']:>7.1f} {r['max_rhat']:>9.3f} "
            f"{r['min_ess_bulk']:>7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
