"""Build the PyMC graph for a :class:`ModelSpec` on encoded data.

Every grouping effect sums to zero over the levels seen, so global terms carry the
average; a new level is N(0, sd^2 (1 + 1/K)) around it with K levels seen, since the
average of K levels is not the population mean (covariates.new_level_scale). Effects are
non-centred (``a = sd * z``) unless the spec centres them; a nested grouping (spec
``within``) sums to zero within each parent level instead.
Missing training tokens are latent: the known ln D values are observed draws from a
population Normal(m, s), and each model without D gets its own latent from it.
A spec with ``[collapse]`` makes each row a mixture of the law and a collapse (collapse.py),
marginalised over the row's regime (pm.Mixture sums the two densities with logsumexp), so
NUTS sees a smooth density.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from qbayes.model import collapse
from qbayes.model.covariates import Covariates
from qbayes.model.encoding import Encoding
from qbayes.model.mean import SCALAR_TERMS, mean_degradation, noise_scale, relative_noise
from qbayes.model.spec import EFFECT_KINDS, LOG_SHIFT, SD_PRIOR, ModelSpec


def log_target(delta: np.ndarray, shift: float = LOG_SHIFT) -> np.ndarray:
    """ln(delta + shift); deltas below -shift/2 (published tables round to 0.01 ppl; collected
    deltas this negative are measurement noise) are floored there."""
    return np.log(np.maximum(delta, -shift / 2) + shift)


SCALARS = (*SCALAR_TERMS, "act_intercept", "act_rate")  # scalar parameters with Normal priors


def known_log_tokens(covs: Covariates) -> np.ndarray:
    """ln(D / 1T) of the distinct known token counts (before any centring within designs):
    one value per distinct count, so a family with many rows does not dominate the
    population of ln D that unknown counts are drawn from."""
    raw = covs.log_d_c + covs.log_d_shift
    return np.unique(raw[~np.isnan(raw)])


def nested_projection(parents: tuple[str, ...]) -> np.ndarray:
    """(K, K) matrix P such that P @ z, for z ~ N(0, I), has unit-variance entries summing to
    zero within each parent; a level alone in its parent gets 0 (its parent's effect is
    all the data can see of it)."""
    parents = np.asarray(parents)
    out = np.zeros((len(parents), len(parents)))
    for parent in np.unique(parents):
        members = np.flatnonzero(parents == parent)
        k = len(members)
        if k > 1:
            block = (np.eye(k) - 1.0 / k) * np.sqrt(k / (k - 1))
            out[np.ix_(members, members)] = block
    return out


def _effect(kind: str, g: str, sd, centred: bool, parents: tuple[str, ...] | None = None):
    """Effects that sum to zero over the levels: the grouping's mean lives in the global
    term, which removes the ridge between the intercept and every grouping's mean (five
    groupings gave five such ridges and R-hat > 1.01 on the group sds). Non-centred
    (sd * z) by default; centred where the data pin every level down."""
    if parents is not None:
        z = pm.Normal(f"z_{kind}_{g}", 0.0, 1.0, dims=g)
        return pm.Deterministic(f"{kind}_{g}", sd * pt.dot(nested_projection(parents), z), dims=g)
    if centred:
        return pm.ZeroSumNormal(f"{kind}_{g}", sigma=sd, dims=g)
    return pm.Deterministic(f"{kind}_{g}", sd * pm.ZeroSumNormal(f"z_{kind}_{g}", sigma=1.0, dims=g), dims=g)


def build_model(spec: ModelSpec, covs: Covariates, enc: Encoding, delta: np.ndarray | None) -> pm.Model:
    """The PyMC model. ``delta`` None builds it for prior predictive sampling."""
    pr = spec.priors
    coords = {g: list(enc.levels[g]) for g in spec.effects}
    coords["tokens_missing"] = list(enc.tokens_missing)
    for g in collapse.effect_names(spec.collapse).values() if spec.collapse else ():
        coords[g] = list(enc.levels[g])
    with pm.Model(coords=coords) as model:
        p = {name: pm.Normal(name, getattr(pr, name).mu, getattr(pr, name).sigma) for name in SCALARS}
        for f in enc.feature_names:
            p[f"feat_{f}"] = pm.Normal(f"feat_{f}", pr.feature.mu, pr.feature.sigma)
        for g, e in spec.effects.items():
            for kind in e.kinds:
                fixed = e.fixed_sd.get(EFFECT_KINDS[kind])
                sd = (
                    pm.Deterministic(f"sd_{kind}_{g}", pt.constant(fixed))
                    if fixed is not None
                    else pm.HalfNormal(f"sd_{kind}_{g}", getattr(pr, SD_PRIOR[kind]).sigma)
                )
                p[f"{kind}_{g}"] = _effect(kind, g, sd, EFFECT_KINDS[kind] in e.centred, enc.parents.get(g))

        tok_mean = pm.Normal("log_tokens_mean", pr.log_tokens_mean.mu, pr.log_tokens_mean.sigma)
        tok_sd = pm.HalfNormal("log_tokens_sd", pr.log_tokens_sd.sigma)
        known = known_log_tokens(covs)
        if known.size:
            pm.Normal("log_tokens_known", tok_mean, tok_sd, observed=known)
        log_d_missing = None
        if enc.tokens_missing:
            z = pm.Normal("z_log_tokens", 0, 1, dims="tokens_missing")
            latent = pm.Deterministic("log_tokens_missing", tok_mean + tok_sd * z, dims="tokens_missing")
            missing = np.isnan(covs.log_d_c)
            at = np.where(missing, covs.tokens_idx, 0)
            log_d_missing = pt.where(missing, latent[at] - np.nan_to_num(covs.log_d_shift), 0.0)

        p["noise_rel"] = pm.HalfNormal("noise_rel", pr.noise_rel.sigma)
        for t in spec.noise:
            p[f"noise_{t}"] = pm.Normal(f"noise_{t}", pr.noise_term.mu, pr.noise_term.sigma)
        if spec.collapse is None:
            p["ceiling"] = pm.LogNormal("ceiling", np.log(pr.ceiling.mu), pr.ceiling.sigma)
        else:  # the law saturates at the collapse level: no ceiling of its own
            c = spec.collapse
            gap = collapse.training_gap(covs)
            p["collapse_log_kappa"] = pm.Normal("collapse_log_kappa", c.log_kappa.mu, c.log_kappa.sigma)
            for g, sd in c.kappa_by.items():
                p[collapse.kappa_name(g)] = _fixed_sd_effect(collapse.kappa_name(g), g, sd)
            p["ceiling"] = collapse.level(p, gap, pt, covs, c)
        mu = mean_degradation(p, covs, spec.effects, enc.levels, pt, log_d_missing, enc.feature_names, spec.curvature)
        nu = pm.Gamma("nu", alpha=pr.nu[0], beta=pr.nu[1])
        if spec.likelihood == "student_t":
            p["noise_floor"] = pm.HalfNormal("noise_floor", pr.noise_floor.sigma)
            pm.StudentT("delta", nu=nu, mu=mu, sigma=noise_scale(p, mu), observed=delta, shape=covs.n)
        elif spec.likelihood == "log_student_t":
            # the shift already absorbs near-zero deltas, so the scale is purely relative
            obs = None if delta is None else log_target(delta, spec.log_shift)
            sigma = relative_noise(p, covs, spec.noise, pt)
            loc = pt.log(mu + spec.log_shift)
            if spec.collapse is None:
                pm.StudentT("log_delta", nu=nu, mu=loc, sigma=sigma, observed=obs, shape=covs.n)
            else:
                _mixture(spec, covs, enc, p, mu, nu, loc, sigma, obs)
    return model


def _fixed_sd_effect(name: str, g: str, sd: float):
    """Zero-sum effects of grouping ``g`` with a fixed sd, non-centred (the collapse regime's)."""
    pm.Deterministic(f"sd_{name}", pt.constant(sd))
    return pm.Deterministic(name, sd * pm.ZeroSumNormal(f"z_{name}", sigma=1.0, dims=g), dims=g)


def _mixture(spec: ModelSpec, covs: Covariates, enc: Encoding, p: dict, mu, nu, loc, sigma, obs) -> None:
    """The observed ln(delta + shift) as a mixture of the law's Student-t and the collapse's
    Normal around its level (collapse.py), with the row's collapse probability as weight."""
    c = spec.collapse
    p["collapse_sd"] = pm.HalfNormal("collapse_sd", c.level_sd.sigma)
    p["collapse_a"] = pm.Normal("collapse_a", c.p_intercept.mu, c.p_intercept.sigma)
    p["collapse_b"] = pm.Normal("collapse_b", c.p_slope.mu, c.p_slope.sigma)
    for g, sd in c.by.items():
        p[f"collapse_{g}"] = _fixed_sd_effect(f"collapse_{g}", g, sd)
    prob = pm.math.sigmoid(collapse.logit(p, covs, mu, c, spec.log_shift, pt))
    n = covs.n
    law = pm.StudentT.dist(nu=nu, mu=loc, sigma=sigma * pt.ones(n))
    down = pm.Normal.dist(mu=pt.log(p["ceiling"] + spec.log_shift), sigma=p["collapse_sd"] * pt.ones(n))
    pm.Mixture("log_delta", w=pt.stack([1.0 - prob, prob], axis=-1), comp_dists=[law, down], observed=obs, shape=n)
