"""Build the PyMC graph for a :class:`ModelSpec` on encoded data.

The Gaussian parameters are one standard-normal vector (packing.py) mapped to the named
parameters; positive ones, learned sds and centred effects are sampled as themselves.
Every grouping effect sums to zero over the levels seen, so global terms carry the
average; a new level is N(0, sd^2 (1 + 1/K)) around it with K levels seen, since the
average of K levels is not the population mean (covariates.new_level_scale). Effects are
non-centred (``a = sd * z``) unless the spec centres them; a nested grouping (spec
``within``) sums to zero within each parent level instead.
Missing training tokens are latent: the known ln D values are observed draws from a
population Normal(m, s), and each model without D gets its own latent from it.
A spec with ``[collapse]`` makes each row a mixture of the law and a collapse (collapse.py),
marginalised over the row's regime (the two densities summed with logaddexp), so NUTS sees a
smooth density.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from qbayes.model import collapse, packing, whiten
from qbayes.model.covariates import Covariates
from qbayes.model.encoding import Encoding
from qbayes.model.mean import (
    design_matrix,
    layout,
    log_target,
    mean_degradation,
    noise_scale,
    noise_shift,
    relative_noise,
    sparse_rows,
)
from qbayes.model.spec import EFFECT_KINDS, SD_PRIOR, ModelSpec


def known_log_tokens(covs: Covariates) -> np.ndarray:
    """ln(D / 1T) of the distinct known token counts (before any centring within designs):
    one value per distinct count, so a family with many rows does not dominate the
    population of ln D that unknown counts are drawn from."""
    raw = covs.log_d_c + covs.log_d_shift
    return np.unique(raw[~np.isnan(raw)])


def build_model(spec: ModelSpec, covs: Covariates, enc: Encoding, delta: np.ndarray | None) -> pm.Model:
    """The PyMC model. ``delta`` None builds it for prior predictive sampling."""
    pr = spec.priors
    coords = {g: list(enc.levels[g]) for g in spec.effects}
    coords["tokens_missing"] = list(enc.tokens_missing)
    for g in collapse.effect_names(spec.collapse).values() if spec.collapse else ():
        coords[g] = list(enc.levels[g])
    pack = packing.plan(spec, enc)
    # every parameter is inside its support by construction (positive ones are sampled on
    # the log scale, the mixture weight is a sigmoid): no bounds checks in the compiled density
    with pm.Model(coords=coords, check_bounds=False) as model:
        # sampled as themselves: positive parameters, learned sds and centred effects
        own: dict = {}
        for g, e in spec.effects.items():
            for kind in e.kinds:
                name, fixed = f"{kind}_{g}", e.fixed_sd.get(EFFECT_KINDS[kind])
                if fixed is None:
                    own[f"sd_{name}"] = pm.HalfNormal(f"sd_{name}", getattr(pr, SD_PRIOR[kind]).sigma)
                if EFFECT_KINDS[kind] in e.centred:
                    if fixed is not None:
                        pm.Deterministic(f"sd_{name}", pt.constant(fixed))
                    own[name] = pm.ZeroSumNormal(name, sigma=fixed if fixed is not None else own[f"sd_{name}"], dims=g)
        own["log_tokens_sd"] = pm.HalfNormal("log_tokens_sd", pr.log_tokens_sd.sigma)
        own["noise_rel"] = pm.HalfNormal("noise_rel", pr.noise_rel.sigma)
        if spec.collapse is None:
            own["ceiling"] = pm.LogNormal("ceiling", np.log(pr.ceiling.mu), pr.ceiling.sigma)
        else:
            own["collapse_sd"] = pm.HalfNormal("collapse_sd", spec.collapse.level_sd.sigma)
        nu = pm.Gamma("nu", alpha=pr.nu[0], beta=pr.nu[1])
        if spec.likelihood == "student_t":
            own["noise_floor"] = pm.HalfNormal("noise_floor", pr.noise_floor.sigma)
        # every Gaussian parameter: one standard-normal vector (packing.py), which nutpie
        # samples whitened by the Laplace approximation at the mode (whiten.py)
        theta = whiten.standard_normal(packing.THETA, pack.size)
        p = {**own, **pack.build(theta, own)}

        known = known_log_tokens(covs)
        if known.size:
            pm.Normal("log_tokens_known", p["log_tokens_mean"], p["log_tokens_sd"], observed=known)
        log_d_missing = None
        if enc.tokens_missing:
            missing = np.isnan(covs.log_d_c)
            at = np.where(missing, covs.tokens_idx, 0)
            log_d_missing = pt.where(missing, p["log_tokens_missing"][at] - np.nan_to_num(covs.log_d_shift), 0.0)
        if spec.collapse is not None:  # the law saturates at the collapse level: no ceiling of its own
            p["ceiling"] = collapse.level(p, collapse.training_gap(covs), pt, covs, spec.collapse)
        mu = mean_degradation(
            p,
            covs,
            spec.effects,
            enc.levels,
            pt,
            log_d_missing,
            enc.feature_names,
            spec.curvature,
            eta=_linear_predictor(pack, theta, covs, spec, enc),
        )
        if spec.likelihood == "student_t":
            pm.StudentT("delta", nu=nu, mu=mu, sigma=noise_scale(p, mu), observed=delta, shape=covs.n)
        elif spec.likelihood == "log_student_t":
            # the shift already absorbs near-zero deltas, so the scale is purely relative
            obs = None if delta is None else log_target(delta, spec.log_shift)
            by_level = noise_shift(p, covs, spec.effects, enc.levels, pt, enc.feature_names, spec.curvature)
            sigma = relative_noise(p, covs, spec.noise, pt, by_level)
            loc = pt.log(mu + spec.log_shift)
            if spec.collapse is None:
                pm.StudentT("log_delta", nu=nu, mu=loc, sigma=sigma, observed=obs, shape=covs.n)
            else:
                _mixture(spec, covs, p, nu, loc, sigma, obs, mu)
    return model


def _linear_predictor(pack: packing.Packing, theta, covs: Covariates, spec: ModelSpec, enc: Encoding):
    """X @ theta_layout as one gather (mean.sparse_rows) of ``c + S @ theta``, where every
    term of the law is linear in the packed vector; None (mean.py's gathers by name) where
    some term is not (a learned sd, a centred effect)."""
    entries = layout(spec.effects, enc.levels, enc.feature_names)
    if not pack.covers([name for name, _ in entries]):
        return None
    index, weight = sparse_rows(design_matrix(covs, spec.effects, enc.levels, spec.curvature))
    at = pack.rows(entries)[index]  # a new-level slot is 0 in the fit: weight 0
    return pt.sum(np.where(at < 0, 0.0, weight) * pack.values(theta)[np.maximum(at, 0)], axis=1)


def _mixture(spec: ModelSpec, covs: Covariates, p: dict, nu, loc, sigma, obs, mu) -> None:
    """The observed ln(delta + shift) as a mixture of the law's Student-t and the collapse's
    Normal around its level, weighted by the row's collapse probability (collapse.py)."""
    n = covs.n
    logit_p = collapse.logit(p, covs, mu, spec.collapse, spec.log_shift, pt)
    col_loc = pt.log(p["ceiling"] + spec.log_shift)
    pm.CustomDist(
        "log_delta",
        nu,
        loc,
        sigma * pt.ones(n),
        logit_p,
        col_loc,
        p["collapse_sd"],
        logp=lambda y, *params: collapse.log_density_graph(y, *params),
        random=collapse.random_draws,
        observed=obs,
        shape=n,
    )
