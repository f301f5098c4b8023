"""Convergence diagnostics with exposed thresholds (arviz-stats computes the numbers)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from qbayes.model.spec import EFFECT_PREFIXES

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3
DIVERGENCES_MAX = 0


@dataclass(frozen=True)
class Convergence:
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    min_bfmi: float
    worst_rhat_var: str
    rhat_max: float = RHAT_MAX
    ess_min: float = ESS_MIN
    bfmi_min: float = BFMI_MIN

    @property
    def failures(self) -> list[str]:
        out = []
        if not self.max_rhat <= self.rhat_max:
            out.append(f"R-hat {self.max_rhat:.3f} > {self.rhat_max} (worst: {self.worst_rhat_var})")
        if self.divergences > DIVERGENCES_MAX:
            out.append(f"{self.divergences} divergent transitions")
        if not self.min_ess_bulk >= self.ess_min:
            out.append(f"bulk ESS {self.min_ess_bulk:.0f} < {self.ess_min}")
        if not self.min_ess_tail >= self.ess_min:
            out.append(f"tail ESS {self.min_ess_tail:.0f} < {self.ess_min}")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def more_draws_help(self) -> bool:
        """R-hat or ESS short of the bar with no divergences: more chains can settle it
        (divergences need a different geometry or step size, not more draws). Not for a
        single chain (R-hat NaN): whoever asked for one chain has left out the multi-chain
        check, and gets the one chain they asked for."""
        if np.isnan(self.max_rhat) or self.divergences > DIVERGENCES_MAX:
            return False
        return not (self.max_rhat <= self.rhat_max and min(self.min_ess_bulk, self.min_ess_tail) >= self.ess_min)

    def line(self) -> str:
        return (
            f"max R-hat {self.max_rhat:.3f} (<= {self.rhat_max}), min bulk ESS {self.min_ess_bulk:.0f}, "
            f"min tail ESS {self.min_ess_tail:.0f} (>= {self.ess_min}), divergences {self.divergences}, "
            f"min BFMI {self.min_bfmi:.2f}"
        )


def sampled_vars(posterior: xr.Dataset) -> list[str]:
    """Free parameters and their transforms: the variables diagnostics should cover
    (deterministic products like a_family = sd * z are covered through their parts).
    Empty or constant variables (zero-sum effects of a grouping with one level) carry no
    information and are left out."""
    out = []
    for v in posterior.data_vars:
        if v.startswith("log_tokens_missing") or (v.startswith(EFFECT_PREFIXES) and f"z_{v}" in posterior):
            continue  # deterministic: sd * z (a centred effect, with no z_, is sampled itself)
        values = posterior[v].values
        if values.size and np.ptp(values) > 0:
            out.append(v)
    return out


def check(
    tree: xr.DataTree, *, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN, bfmi_min: float = BFMI_MIN
) -> Convergence:
    import arviz_stats as azs

    post = tree["posterior"].to_dataset()
    if post.sizes.get("chain", 1) < 2:
        warnings.warn("R-hat needs at least 2 chains; it is reported as NaN", stacklevel=2)
    names = sampled_vars(post)
    with warnings.catch_warnings():
        # a structural zero inside a vector (a level alone in its parent of a nested effect)
        # is constant: arviz-stats divides 0 by 0 there, and the NaN is skipped below
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = azs.rhat(tree, var_names=names)
        bulk = azs.ess(tree, var_names=names, method="bulk")
        tail = azs.ess(tree, var_names=names, method="tail")
    rmax = {v: float(np.nanmax(rhat[v].values)) for v in names}
    worst = max(rmax, key=rmax.get)
    stats = tree["sample_stats"].to_dataset()
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    try:
        bfmi = float(np.min(azs.bfmi(tree)["energy"].values)) if "energy" in stats else float("nan")
    except (KeyError, ValueError, AttributeError):
        bfmi = float("nan")
    return Convergence(
        max_rhat=rmax[worst],
        min_ess_bulk=float(min(np.nanmin(bulk[v].values) for v in names)),
        min_ess_tail=float(min(np.nanmin(tail[v].values) for v in names)),
        divergences=div,
        min_bfmi=bfmi,
        worst_rhat_var=worst,
        rhat_max=rhat_max,
        ess_min=ess_min,
        bfmi_min=bfmi_min,
    )


def more_draws_help(tree: xr.DataTree) -> bool:
    """Whether a fit's sampler should add chains (samplers.sample's ``more``)."""
    return check(tree).more_draws_help
