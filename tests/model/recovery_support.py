"""Parameter recovery of the default model on the shipped covariates (test_recovery.py).

The known parameters are one draw of the shipped posterior (``data/default-fit.nc``), not its
mean (the model samples its Gaussian parameters as one packed vector, packing.py; the draw's
named values are mapped back to it with ``Packing.solve``): a draw lies where the data put the
parameters that the data inform, and where the prior puts those they barely inform (the
activation terms, the collapse odds), so a 90% interval should cover it at about 90% for both
kinds; the posterior mean would sit at the centre of every weakly informed interval and inflate
the coverage. The degradations of the shipped rows are simulated from the default model at that
draw and refitted through :func:`qbayes.model.fit.fit_table`, as ``qbayes fit`` does (the floor
of ln(delta + shift) at -shift/2 included: 1-2% of simulated rows reach it, as some real rows
do).

``PYTHONPATH=.:tests:tests/model python tests/model/recovery_support.py [REPLICATES]`` runs the study behind
the test's acceptance band: many truths and noise draws, one compile (the simulated ln
deltas enter the model as shared data; each replicate is whitened at its own mode, as a fit
is), and the spread of the coverage count across them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pymc as pm
from scipy import stats

from qbayes.db import store
from qbayes.model import fitfile, packing, whiten
from qbayes.model.covariates import covariates
from qbayes.model.encoding import Encoding
from qbayes.model.fit import prepare
from qbayes.model.graph import build_model
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table
from qbayes.resources import shipped_fit

from helpers import SHIPPED_DB

SPEC = "hierarchical"  # the default model; data/default-fit.nc is its fit of the shipped rows
LIKELIHOOD = "log_delta"  # the likelihood's name in build_model (log_student_t)
# the population of ln D for models without training tokens: no shipped row lacks them, so
# these two see only the fixed known ln D values, never a simulated delta
NOT_FROM_DELTA = ("log_tokens_mean", "log_tokens_sd")
TRUTH_DRAW = (1, 123)  # (chain, draw) of the shipped posterior taken as the known parameters
LEVEL = 0.9  # central posterior interval whose coverage is counted


@dataclass
class Setup:
    table: pl.DataFrame  # the shipped training rows, their observed delta
    spec: object  # ModelSpec of SPEC
    encoding: Encoding
    model: pm.Model  # the default model on those rows with the likelihood unobserved
    truth: dict[str, np.ndarray]  # free parameter -> its known value
    known: dict[str, np.ndarray]  # what recovery is counted on (draw_truth) -> its known value

    @property
    def pack(self) -> packing.Packing:
        return packing.plan(self.spec, self.encoding)


def setup(draw: tuple[int, int] = TRUTH_DRAW) -> Setup:
    """The shipped training table, the default model on it, and one draw of the shipped
    posterior as the known values of every free parameter (constants such as the fixed
    sds are Deterministics, not free, and are neither set nor counted)."""
    spec = load_spec(SPEC)
    table = training_table(store.load(SHIPPED_DB), rows=spec.rows)
    df, enc = prepare(table, spec)
    model = build_model(spec, covariates(enc.read(df)), enc, None)
    shipped = fitfile.load(shipped_fit())
    # the draw belongs to these rows and levels: same spec, same levels, same row count
    assert shipped.spec.hash == spec.hash
    assert all(enc.levels[g] == levels for g, levels in shipped.encoding.levels.items())
    assert shipped.data.height == table.height
    s = Setup(table, spec, enc, model, {}, {})
    s.truth, s.known = draw_truth(s, shipped.posterior, *draw)
    return s


def draw_truth(s: Setup, posterior, chain: int, draw: int) -> tuple[dict, dict]:
    """From one draw of a posterior of the model: every free parameter's value (what the
    simulation fixes: the packed vector, sampled whitened as ``theta_white``, which the
    model as built maps to theta unchanged, and the positive parameters), and the values whose
    recovery is counted: every named parameter the packed vector makes (scalars, noise and
    collapse terms, each grouping's per-level effects) and the positive ones, less those no
    simulated delta informs and the effect levels the nesting holds at 0 (a level alone in its
    parent)."""
    post = posterior.isel(chain=chain, draw=draw)
    pack = s.pack
    values = {n: np.asarray(post[n].values, dtype=np.float64) for n in post.data_vars}
    free = [v.name for v in s.model.free_RVs if v.name != LIKELIHOOD]
    truth = {n: values[n] for n in free if n != whiten.WHITE}
    truth[whiten.WHITE] = pack.solve(values)
    named = [b.name for b in pack.blocks] + [n for n in free if n != whiten.WHITE]
    known = {}
    for n in named:
        if n in NOT_FROM_DELTA:
            continue
        spread = np.atleast_1d(posterior[n].std(dim=("chain", "draw")).values)
        value = np.atleast_1d(values[n])
        known[n] = value[spread > 0]
    return truth, known


def simulate_log(s: Setup, seed: int, truth: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """ln(delta + shift) for every row, drawn from the model with the parameters fixed."""
    fixed = pm.do(s.model, truth if truth is not None else s.truth)
    return np.asarray(pm.draw(fixed[LIKELIHOOD], random_seed=seed), dtype=np.float64)


def simulated_table(s: Setup, seed: int, truth: dict[str, np.ndarray] | None = None) -> pl.DataFrame:
    """The shipped rows with ``delta`` replaced by a simulated one."""
    delta = np.exp(simulate_log(s, seed, truth)) - s.spec.log_shift
    return s.table.with_columns(pl.Series("delta", delta))


def coverage(posterior, known: dict[str, np.ndarray], level: float = LEVEL) -> dict[str, np.ndarray]:
    """Per known parameter, whether each entry's central ``level`` posterior interval
    (chains pooled) holds its known value; every level of a zero-sum effect is counted. A
    parameter the fitted model lacks (a pooled model's family effects) is, for that model,
    0 with certainty: covered only where the known value is 0."""
    out = {}
    for n, value in known.items():
        if n not in posterior.data_vars:
            out[n] = np.atleast_1d(value == 0.0)
            continue
        draws = posterior[n].values
        draws = draws.reshape(draws.shape[0] * draws.shape[1], -1)
        draws = draws[:, draws.std(axis=0) > 0] if draws.shape[1] > value.size else draws
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        out[n] = np.atleast_1d((lo <= value) & (value <= hi))
    return out


def acceptance_band(n: int, *, level: float = LEVEL, design_effect: float, tail: float = 5e-4) -> tuple[int, int]:
    """Covered counts out of ``n`` accepted: the central 1 - 2 ``tail`` range of a normal
    count with the binomial mean n * level and the binomial variance multiplied by
    ``design_effect`` (the measured overdispersion of correlated indicators), widened to
    whole counts and clipped to 0..n."""
    sd = np.sqrt(design_effect * n * level * (1 - level))
    z = stats.norm.isf(tail)
    return max(0, int(np.floor(n * level - z * sd))), min(n, int(np.ceil(n * level + z * sd)))


def study(replicates: int = 40, *, draws: int = 300, tune: int = 300, chains: int = 2) -> list[int]:
    """Coverage counts of ``replicates`` simulated data sets, each from a different draw of
    the shipped posterior and its own noise, fitted with the settings of the test. The
    model is compiled once: the simulated ln deltas are a shared variable swapped per
    replicate (nutpie's with_data), so this bypasses fit_table, whose only other work is
    ln(delta + shift) with its floor, applied here too."""
    import arviz as az
    import nutpie
    import pytensor

    from qbayes.model.mean import log_target

    s = setup()
    shared = pytensor.shared(np.zeros(s.table.height), name="sim_log_delta")
    observed = pm.observe(s.model, {LIKELIHOOD: shared})
    keep = [v.name for v in observed.free_RVs] + [packing.THETA]
    compiled = nutpie.compile_pymc_model(observed, var_names=keep)
    pack = s.pack
    shipped = fitfile.load(shipped_fit()).posterior
    rng = np.random.default_rng(2026)
    counts, total = [], None
    for r in range(replicates):
        chain, i = int(rng.integers(shipped.sizes["chain"])), int(rng.integers(shipped.sizes["draw"]))
        truth, known = draw_truth(s, shipped, chain, i)
        sim = simulate_log(s, seed=1000 + r, truth=truth)
        y = log_target(np.exp(sim) - s.spec.log_shift, s.spec.log_shift)
        idata = nutpie.sample(
            whiten.precondition(compiled.with_data(sim_log_delta=y), r),
            draws=draws,
            tune=tune,
            chains=chains,
            cores=2,
            seed=r,
            progress_bar=False,
            target_accept=0.9,
            low_rank_modified_mass_matrix=True,
        )
        posterior = pack.expand(idata.posterior, lambda dims: list(observed.coords[dims]))
        cov = coverage(posterior, known)
        hits = np.concatenate(list(cov.values()))
        total = hits.size
        counts.append(int(hits.sum()))
        missed = [n for n, c in cov.items() if not c.all()]
        rhat = max(float(v.max()) for v in az.rhat(posterior[list(known)]).data_vars.values())
        div = int(idata.sample_stats["diverging"].sum())
        print(
            f"replicate {r}: truth ({chain}, {i}) nu {float(truth['nu']):.2f} covered {hits.sum()}/{hits.size}; "
            f"max rhat {rhat:.3f}, {div} divergent; missed in {missed}",
            flush=True,
        )
    c = np.asarray(counts)
    binom_var = total * LEVEL * (1 - LEVEL)
    print(
        f"n = {total}; counts mean {c.mean():.2f} (rate {c.mean() / total:.3f}), variance {c.var(ddof=1):.2f} "
        f"against binomial {binom_var:.2f}: design effect {c.var(ddof=1) / binom_var:.2f}; "
        f"range {c.min()}-{c.max()}"
    )
    return counts


if __name__ == "__main__":
    import sys

    study(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
