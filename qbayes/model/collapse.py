"""The collapse regime of a spec with ``[collapse]`` (spec.Collapse): each row either follows
the law (the mean of mean.py with Student-t noise on ln(delta + shift)) or collapses.

At 2 bits a model either holds (about 1 nat) or breaks down to a loss near that of an
uninformed predictor: a uniform guess over the V-token vocabulary scores ln V nats per token,
ln V - ln ppl_fp16 more than the unquantized model. A collapsed row sits at kappa times that
gap (the *level*), with a log-normal scatter; kappa is learned (published collapses sit at 1.0
to 1.5 times the gap: a broken model can be worse than uniform), optionally per level of some
groupings (spec ``kappa_by``: LLaMA's collapses sit near 1.2 times the gap, Qwen3's near 1.45;
a level the fit has not seen draws its shift from their population). The probability of the
collapse rises with the law's mean degradation (a logistic in its logarithm), with optional
intercepts per level of some groupings (spec ``by``). The law's mean saturates at the same
level (mean.saturate's ceiling, per row), so there is no ceiling parameter that could trade
places with the collapse level.

The PyMC graph (graph.py), the NumPy predictor (predict.py) and the conditioning of draws on
observed rows (conditioning.py) all take the level, the probability and the mixture's density
from here, so they agree on the likelihood.
"""

from __future__ import annotations

import numpy as np

from qbayes.errors import QBayesError
from qbayes.model.covariates import Covariates
from qbayes.model.spec import Collapse

MIN_GAP = 0.5  # nats: floor of ln V - ln ppl_fp16 (a query whose fp16 perplexity is near V)
# predictive draws of a collapse model are capped here (mean.LOG_MU_MAX's ~30 nats), not at
# predict.DELTA_MAX: collapsed Qwen3 rows sit at 13.9 nats, near the law's 15-nat cap
DELTA_MAX = 30.0
POP_LOG_VOCAB = "pop_log_vocab"  # the Draws entry holding ln V draws for a vocabulary the fit does not know
SCALARS = ("collapse_log_kappa", "collapse_sd", "collapse_a", "collapse_b")  # parameter names


def population(vocab: dict[str, float]) -> tuple[float, float]:
    """Mean and sd of ln V over the distinct vocabulary sizes of ``vocab`` (the families a fit
    saw or knows, Encoding.family_vocab_seen and known_vocab): the population a query's ln V is
    drawn from when neither the query nor its family gives one; an sd of 0.5 (a factor of 1.6
    in V) when fewer than three sizes are known, and ln 50,000 +- 1 when none is."""
    logs = np.log(np.unique(np.asarray(list(vocab.values()), dtype=np.float64)))
    if logs.size == 0:
        return float(np.log(50_000.0)), 1.0
    sd = float(np.std(logs, ddof=1)) if logs.size > 2 else 0.5
    return float(logs.mean()), sd


def training_gap(d: Covariates) -> np.ndarray:
    """(N,) ln V - ln ppl_fp16 of training rows, every one of which needs its vocabulary."""
    missing = np.isnan(d.log_vocab)
    if missing.any():
        raise QBayesError(
            f"a model with [collapse] needs every training row's vocabulary size; {int(missing.sum())} rows "
            "have none: give their models' vocab_size in the models table, or their family's in "
            "data/known_families.csv"
        )
    return np.maximum(d.log_vocab - d.log_fp16, MIN_GAP)


def gap_draws(d: Covariates, p: dict) -> np.ndarray:
    """(N, S) ln V - ln ppl_fp16 per row and draw: a row without a vocabulary size takes the
    draws' population ln V (:data:`POP_LOG_VOCAB`)."""
    log_v = np.where(np.isnan(d.log_vocab)[:, None], p[POP_LOG_VOCAB], d.log_vocab[:, None])
    return np.maximum(log_v - d.log_fp16[:, None], MIN_GAP).astype(p[POP_LOG_VOCAB].dtype)


def _by_effect(p: dict, d: Covariates, g: str, name: str, xp):
    """Each row's effect ``p[name]`` of grouping ``g`` ((N,) PyTensor, (N, S) NumPy): a
    level the fit has not seen takes the draws' new-level row, scaled as the mean's effects
    are (covariates.new_level_scale), and has 0 in the PyMC model (no training row has one)."""
    idx = d.idx[g]
    if xp is np:
        scale = np.where(idx < 0, d.new_scale[g], 1.0)[:, None].astype(p[name].dtype)
        return p[name][idx] * scale
    seen = idx >= 0
    return p[name][np.where(seen, idx, 0)] * seen


def kappa_name(g: str) -> str:
    """The parameter of grouping ``g``'s deviations of ln kappa (spec ``kappa_by``)."""
    return f"collapse_kappa_{g}"


def level(p: dict, gap, xp, d: Covariates | None = None, spec: Collapse | None = None):
    """The collapse level, nats: kappa * (ln V - ln ppl_fp16), with ln kappa shifted per level
    of each grouping of ``spec.kappa_by`` (rows ``d``)."""
    log_kappa = p["collapse_log_kappa"]
    for g in spec.kappa_by if spec is not None else ():
        log_kappa = log_kappa + _by_effect(p, d, g, kappa_name(g), xp)
    return xp.exp(log_kappa) * gap


def effect_names(spec: Collapse) -> dict[str, str]:
    """Parameter name -> grouping of every per-level effect of the collapse regime: the
    logit's (``by``) and ln kappa's (``kappa_by``)."""
    return {**{f"collapse_{g}": g for g in spec.by}, **{kappa_name(g): g for g in spec.kappa_by}}


def logit(p: dict, d: Covariates, mu, spec: Collapse, shift: float, xp):
    """logit P(collapse) for rows with law mean ``mu``: (N,) with PyTensor parameters,
    (N, S) with NumPy draws. A level the fit has not seen of a ``by`` grouping takes the draws'
    new-level row, scaled as the mean's effects are (covariates.new_level_scale)."""
    out = p["collapse_a"] + p["collapse_b"] * xp.log(mu + shift)
    for g in spec.by:
        out = out + _by_effect(p, d, g, f"collapse_{g}", xp)
    return out


def probability(p: dict, d: Covariates, mu, spec: Collapse, shift: float) -> np.ndarray:
    """(N, S) P(collapse) per row and draw, NumPy."""
    return 1.0 / (1.0 + np.exp(-logit(p, d, mu, spec, shift, np)))


def log_density(y, loc, scale, nu, const, col_loc, col_sd, prob) -> np.ndarray:
    """(N, S) log density of ln(delta + shift) = ``y`` under the mixture: the law's Student-t
    (location ``loc``, scale, dof ``nu`` and its log-normaliser ``const`` per draw) with
    weight 1 - ``prob``, and the collapse's Normal(``col_loc``, ``col_sd``) with ``prob``."""
    x = (y - loc) / scale
    law = const - (nu + 1) / 2 * np.log1p(x**2 / nu) - np.log(scale)
    z = (y - col_loc) / col_sd
    col = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - np.log(col_sd)
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-prob) + law, np.log(prob) + col)


def log_density_graph(y, nu, loc, scale, logit_p, col_loc, col_sd):
    """PyTensor twin of :func:`log_density` for the PyMC model, with the collapse probability
    given by its logit: elementwise throughout (log-sigmoids, a two-term logaddexp), so the
    compiled density and its gradient fuse into a few loops instead of pm.Mixture's generic
    stack-and-logsumexp graph."""
    import pytensor.tensor as pt

    x = (y - loc) / scale
    law = (
        pt.gammaln((nu + 1.0) / 2.0)
        - pt.gammaln(nu / 2.0)
        - 0.5 * pt.log(nu * np.pi)
        - pt.log(scale)
        - (nu + 1.0) / 2.0 * pt.log1p(x**2 / nu)
    )
    z = (y - col_loc) / col_sd
    col = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - pt.log(col_sd)
    # ln((1 - p) law + p col) = logaddexp(law, col + logit) - softplus(logit): one softplus
    # (and one sigmoid in the gradient) fewer per row than ln(1 - p) and ln p taken apart
    b = col + logit_p
    return pt.maximum(law, b) + pt.log1p(pt.exp(-pt.abs(law - b))) - pt.softplus(logit_p)


def random_draws(nu, loc, scale, logit_p, col_loc, col_sd, rng=None, size=None) -> np.ndarray:
    """Draws of ln(delta + shift) from the mixture (prior predictive checks of the PyMC model)."""
    rng = np.random.default_rng() if rng is None else rng
    law = loc + scale * rng.standard_t(nu, size=size)
    col = col_loc + col_sd * rng.standard_normal(size=size)
    prob = 1.0 / (1.0 + np.exp(-logit_p))
    return np.where(rng.uniform(size=size) < prob, col, law)


def mix(law_y: np.ndarray, col_loc: np.ndarray, col_sd, prob: np.ndarray, u: np.ndarray, z: np.ndarray):
    """Draws of ln(delta + shift) from the mixture, in place of ``law_y`` (the law's draws):
    where the uniform ``u`` falls below the collapse probability, the collapse's location plus
    ``col_sd`` times the standard normal ``z``. ``u`` and ``z`` broadcast against the rows."""
    collapsed = u < prob
    return np.where(collapsed, col_loc + col_sd * z, law_y)
