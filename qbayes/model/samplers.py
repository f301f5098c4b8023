"""Samplers, one small unit each, behind a registry with close-match suggestions.

Each returns an ArviZ DataTree with ``posterior`` and ``sample_stats`` (with a boolean
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
from qbayes.registry import Registry

if TYPE_CHECKING:  # pymc is imported when a sampler runs, so the CLI can read the defaults cheaply
    import pymc as pm


@dataclass(frozen=True)
class SampleConfig:
    draws: int = 1000
    tune: int = 1000
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


@dataclass
class SampleResult:
    tree: xr.DataTree
    compile_s: float
    sample_s: float

    @property
    def wall_s(self) -> float:
        return self.compile_s + self.sample_s


SAMPLERS: Registry[Callable[[pm.Model, SampleConfig], SampleResult]] = Registry("sampler")


def _to_tree(idata) -> xr.DataTree:
    from arviz_base import convert_to_datatree

    tree = convert_to_datatree(idata)
    keep = {k: tree[k].to_dataset() for k in ("posterior", "sample_stats") if k in tree.children}
    return xr.DataTree.from_dict(keep)


@SAMPLERS.register("nutpie")
def _nutpie(model: pm.Model, cfg: SampleConfig) -> SampleResult:
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model)
    t1 = time.perf_counter()
    idata = nutpie.sample(
        compiled,
        draws=cfg.draws,
        tune=cfg.tune,
        chains=cfg.chains,
        cores=cfg.cores,
        seed=cfg.seed,
        progress_bar=cfg.progress,
        target_accept=cfg.target_accept,
        save_warmup=False,
        low_rank_modified_mass_matrix=cfg.low_rank_mass_matrix,
    )
    t2 = time.perf_counter()
    return SampleResult(_to_tree(idata), t1 - t0, t2 - t1)


@SAMPLERS.register("pymc")
def _pymc(model: pm.Model, cfg: SampleConfig, nuts_sampler: str = "pymc") -> SampleResult:
    import pymc as pm

    t0 = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=cfg.draws,
            tune=cfg.tune,
            chains=cfg.chains,
            cores=min(cfg.cores, cfg.chains),
            random_seed=cfg.seed,
            progressbar=cfg.progress,
            target_accept=cfg.target_accept,
            nuts_sampler=nuts_sampler,
            compute_convergence_checks=False,
        )
    # PyMC compiles inside pm.sample; its compile time is counted as sampling time.
    return SampleResult(_to_tree(idata), 0.0, time.perf_counter() - t0)


def _jax(name: str) -> Callable[[pm.Model, SampleConfig], SampleResult]:
    def run(model: pm.Model, cfg: SampleConfig) -> SampleResult:
        if importlib.util.find_spec("jax") is None or importlib.util.find_spec(name) is None:
            raise QBayesError(f"sampler '{name}' needs JAX: pip install 'qbayes[jax]'")
        return _pymc(model, cfg, nuts_sampler=name)

    return run


SAMPLERS.register("numpyro", _jax("numpyro"))
SAMPLERS.register("blackjax", _jax("blackjax"))
DEFAULT_SAMPLER = "nutpie"


def sample(model: pm.Model, *, sampler: str = DEFAULT_SAMPLER, config: SampleConfig = SampleConfig()) -> SampleResult:
    return SAMPLERS.get(sampler)(model, config)
