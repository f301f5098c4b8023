"""Samplers, one small unit each, behind a registry with close-match suggestions.

Each sampler compiles the model once and then draws chains on demand; :func:`sample` draws
``chains`` chains and, while the caller's check says more draws would help (R-hat or ESS
short of the bar), up to ``extensions`` more rounds of as many fresh chains, pooled with the
first (every chain has its own warm-up, so pooled chains are as independent as one run's).
The result is an ArviZ DataTree with ``posterior`` and ``sample_stats`` (with a boolean
``diverging``), plus the wall time split into compile and sampling. nutpie is the default:
with its low-rank mass matrix the default model takes ~15 gradient steps per draw, and it
needs no extra dependency; ``bench/bench_fit.py`` compares every sampler's wall time and
effective samples per second against PyMC's own NUTS (figures in docs/performance.md).
The JAX samplers need the ``[jax]`` extra.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xarray as xr

from qbayes.errors import QBayesError
from qbayes.model import whiten
from qbayes.registry import Registry

if TYPE_CHECKING:  # pymc is imported when a sampler runs, so the CLI can read the defaults cheaply
    import pymc as pm


@dataclass(frozen=True)
class SampleConfig:
    # 4 x 700 draws: over seeds 1-5 of the default model max R-hat 1.0065-1.0092 and bulk ESS
    # 944-1,374 (bar 1.01 and 400), where 500 draws gave R-hat above 1.01 in 2 of 5; the extra
    # 300 draws cost ~6 s of a cold first fit (docs/performance.md)
    draws: int = 700
    # the default model's packed vector is whitened at the mode before sampling (whiten.py),
    # so warm-up needs few steps: 200 per chain cost 33k gradients in all, against 152k for
    # 300 without whitening (docs/performance.md); a short one is caught by R-hat
    tune: int = 200
    chains: int = 4
    seed: int = 20261123
    cores: int = 2
    # the default model has no learned group sds, so no funnels: at 0.9 a draw takes ~15
    # gradient steps with nutpie's low-rank mass matrix (docs/performance.md)
    target_accept: float = 0.9
    progress: bool = True
    # nutpie only: a low-rank correction of the diagonal mass matrix, which follows the
    # correlations between method, family and global terms (~100 steps per draw without it)
    low_rank_mass_matrix: bool = True
    # rounds of ``chains`` fresh chains (seed + round) added when the caller's check fails
    extensions: int = 2


@dataclass
class SampleResult:
    tree: xr.DataTree
    compile_s: float
    sample_s: float
    rounds: int = 1  # rounds of ``chains`` chains drawn: 1 + the extensions used

    @property
    def wall_s(self) -> float:
        return self.compile_s + self.sample_s


@dataclass
class Prepared:
    """A compiled model: ``draw(seed)`` samples ``chains`` chains and returns their tree."""

    compile_s: float
    draw: Callable[[int], xr.DataTree]


# (model, config, variables to keep: None for all) -> a compiled sampler
SAMPLERS: Registry[Callable[[pm.Model, SampleConfig, list[str] | None], Prepared]] = Registry("sampler")


def _to_tree(idata) -> xr.DataTree:
    from arviz_base import convert_to_datatree

    tree = convert_to_datatree(idata)
    keep = {k: tree[k].to_dataset() for k in ("posterior", "sample_stats") if k in tree.children}
    return xr.DataTree.from_dict(keep)


def pool_chains(trees: list[xr.DataTree]) -> xr.DataTree:
    """The chains of several runs of the same model as one run's, numbered 0, 1, ..."""
    groups = {}
    for name in ("posterior", "sample_stats"):
        ds = xr.concat([t[name].to_dataset() for t in trees], dim="chain", coords="minimal", compat="override")
        groups[name] = ds.assign_coords(chain=range(ds.sizes["chain"]))
    return xr.DataTree.from_dict(groups)


@SAMPLERS.register("nutpie")
def _nutpie(model: pm.Model, cfg: SampleConfig, keep: list[str] | None = None) -> Prepared:
    import nutpie

    t0 = time.perf_counter()
    compiled = whiten.precondition(nutpie.compile_pymc_model(model, var_names=keep), cfg.seed)

    def draw(seed: int) -> xr.DataTree:
        idata = nutpie.sample(
            compiled,
            draws=cfg.draws,
            tune=cfg.tune,
            chains=cfg.chains,
            cores=cfg.cores,
            seed=seed,
            progress_bar=cfg.progress,
            target_accept=cfg.target_accept,
            save_warmup=False,
            low_rank_modified_mass_matrix=cfg.low_rank_mass_matrix,
        )
        return _to_tree(idata)

    return Prepared(time.perf_counter() - t0, draw)


@SAMPLERS.register("pymc")
def _pymc(model: pm.Model, cfg: SampleConfig, keep: list[str] | None = None, nuts_sampler: str = "pymc") -> Prepared:
    import pymc as pm

    def draw(seed: int) -> xr.DataTree:
        with model:
            idata = pm.sample(
                draws=cfg.draws,
                tune=cfg.tune,
                chains=cfg.chains,
                cores=min(cfg.cores, cfg.chains),
                random_seed=seed,
                progressbar=cfg.progress,
                target_accept=cfg.target_accept,
                nuts_sampler=nuts_sampler,
                var_names=keep,
                compute_convergence_checks=False,
            )
        return _to_tree(idata)

    # PyMC compiles inside pm.sample; its compile time is counted as sampling time.
    return Prepared(0.0, draw)


def _jax(name: str) -> Callable[[pm.Model, SampleConfig], Prepared]:
    def run(model: pm.Model, cfg: SampleConfig, keep: list[str] | None = None) -> Prepared:
        if importlib.util.find_spec("jax") is None or importlib.util.find_spec(name) is None:
            raise QBayesError(f"sampler '{name}' needs JAX: pip install 'qbayes[jax]'")
        return _pymc(model, cfg, keep, nuts_sampler=name)

    return run


SAMPLERS.register("numpyro", _jax("numpyro"))
SAMPLERS.register("blackjax", _jax("blackjax"))
DEFAULT_SAMPLER = "nutpie"


def sample(
    model: pm.Model,
    *,
    sampler: str = DEFAULT_SAMPLER,
    config: SampleConfig = SampleConfig(),
    more: Callable[[xr.DataTree], bool] | None = None,
    keep: list[str] | None = None,
) -> SampleResult:
    """Draw ``config.chains`` chains; while ``more(tree)`` says more draws would help, add
    rounds of as many fresh chains (at most ``config.extensions``). ``keep`` names the
    variables to store (None: all, deterministics included): the sampler compiles only what
    computes them."""
    prepared = SAMPLERS.get(sampler)(model, config, keep)
    t0 = time.perf_counter()
    trees = [prepared.draw(config.seed)]
    while more is not None and len(trees) <= config.extensions and more(pool_chains(trees)):
        trees.append(prepared.draw(config.seed + len(trees)))
    tree = trees[0] if len(trees) == 1 else pool_chains(trees)
    return SampleResult(tree, prepared.compile_s, time.perf_counter() - t0, rounds=len(trees))
