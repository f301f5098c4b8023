"""The mean degradation, written once for both PyTensor (fitting) and NumPy (prediction).

The log-mean is linear in the parameters, so for prediction it is one matrix product
``X @ theta``: ``X`` (N x P) is the row design built by :func:`design_matrix` and ``theta``
(P, S) stacks the posterior draws in the order of :func:`layout`, so a whole chunk of
rows x draws is one BLAS call. Inside the PyMC model the same sum is a gather, whose gradient
is far cheaper than X's: where every term is linear in the packed standard-normal vector
(packing.py) it is one gather of X's nonzero entries (:func:`sparse_rows`, built in graph.py);
otherwise each row reads its levels' effects by name (``_linear_predictor_graph``).

    log mu_w = intercept + sum_g a_g[idx_g]
               - (bits_rate + sum_g b_g[idx_g]) * (bits - 4) + curvature * q(bits)
               - (gamma_n + sum_g n_g[idx_g]) * (ln N - ln 7B) + gamma_d * (ln D - ln D_ref)
               + per_channel * (c_pc + sum_g c_g[idx_g] + c_pcb * (4 - bits))
               + c_group * log2(group / 128)
               + sum_g q_g[idx_g] * min(bits - 4, 0)^2
               + sum_g r_g[idx_g] * [act_bits < 16] * max(8 - act_bits, 0)
               + sum_k feat_k * z_k          (standardised measured features, if the spec has any)
    mu_u = mu_w + [act_bits < 16] * exp(act_intercept + sum_g u_g[idx_g] - act_rate * (act_bits - 4))
    mu = mu_u / (1 + mu_u / ceiling)

with ``ln D_ref = ln 1T``, or for a spec with ``tokens_within`` the mean ln D of the row's
design's families (a design the fit has not seen: no D term; see covariates.covariates), and
``q(bits) = (bits - 4)^2``, or ``min(bits - 4, 0)^2`` for a spec with ``curvature =
"low_bits"``. The curvature lets degradation accelerate into a collapse at low bits; the ceiling
saturates collapses: a broken model's loss cannot grow without bound (the data's worst
cells sit near 9-11 nats), while exp(-bits/gamma) would.

Each grouping contributes K + 1 columns: one per level the fit saw, and a last one for a
level it did not see (the design's index -1). In the PyMC model that last parameter is
fixed at 0 (no row uses it); in prediction it holds a fresh draw from the population.
The activation-term effects (``u``, spec.ACT_KINDS) sit in theta like the others; their
columns make a second design (:func:`design_matrix` with ``part="act"``) whose product is the
shift of the activation term's exponent, and the law's design has zeros there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qbayes.model.covariates import Covariates
from qbayes.model.spec import ACT_KINDS, LOG_SHIFT, NOISE_KINDS, NOISE_TERMS, Effect

# exp() of the linear predictor is capped at exp(LOG_MU_MAX) ~ 30 nats (a perplexity ratio
# of 1e13), beyond any collapse in the data; it keeps early warm-up and prior draws finite.
LOG_MU_MAX = 3.4


def log_target(delta: np.ndarray, shift: float = LOG_SHIFT) -> np.ndarray:
    """ln(delta + shift), the scale the log_student_t likelihood lives on; deltas below
    -shift/2 (published tables round to 0.01 ppl; collected deltas this negative are
    measurement noise) are floored there. The fit's target, and what prediction,
    conditioning and the in-sample check compare with it."""
    return np.log(np.maximum(delta, -shift / 2) + shift)


@dataclass(frozen=True)
class Term:
    """One scalar term of the log-mean: its parameter (whose prior is the
    :class:`~qbayes.model.spec.Priors` field of the same name), the covariate it multiplies
    row by row, and what it means. The PyMC graph, the NumPy predictor and the report all
    read this table, so a term is declared once."""

    name: str
    covariate: Callable[[Covariates, str], np.ndarray]  # (covariates, spec curvature) -> (N,)
    doc: str


TERMS = (
    Term("intercept", lambda d, c: np.ones(d.n), "ln delta at 4 bits, 7B parameters, 1T tokens, groups of 128"),
    Term("bits_rate", lambda d, c: -d.bits_c, "fall of ln delta per extra bit per weight (1/gamma)"),
    Term(
        "bits_curvature",
        lambda d, c: (d.bits_c if c == "quadratic" else np.minimum(d.bits_c, 0.0)) ** 2,
        "acceleration into collapse: (bits - 4)^2, below 4 bits only for curvature = low_bits",
    ),
    Term("gamma_n", lambda d, c: -d.log_n_c, "fall of ln delta per unit of ln(parameters / 7B)"),
    Term("gamma_d", lambda d, c: np.nan_to_num(d.log_d_c), "rise of ln delta per unit of ln(training tokens / 1T)"),
    Term("per_channel", lambda d, c: d.per_channel, "one scale per output channel instead of groups of 128, at 4 bits"),
    Term("per_channel_bits", lambda d, c: -d.per_channel * d.bits_c, "growth of the per-channel shift per bit removed"),
    Term("log2_group", lambda d, c: d.log2_group, "per doubling of the group size from 128"),
)
SCALAR_TERMS = tuple(t.name for t in TERMS)


def layout(
    effects: dict[str, Effect], levels: dict[str, tuple[str, ...]], features: tuple[str, ...] = ()
) -> list[tuple[str, int]]:
    """(parameter name, number of columns) in the order of theta and of X's columns."""
    out = [(name, 1) for name in SCALAR_TERMS] + [(f"feat_{f}", 1) for f in features]
    for g, e in effects.items():
        out.extend((f"{kind}_{g}", len(levels[g]) + 1) for kind in e.kinds)
    return out


def _columns(d: Covariates, curvature: str) -> list[np.ndarray]:
    """The covariates of the scalar terms and features, in layout order."""
    return [*(t.covariate(d, curvature) for t in TERMS), *d.feats.T]


def weights(d: Covariates, g: str) -> dict[str, np.ndarray]:
    """The covariate each part of grouping ``g``'s effect multiplies, by kind. A curvature
    part ("q") acts below 4 bits only, whatever the spec's global curvature; an activation
    slope ("r") per activation bit below 8, on rows whose activations are quantized; an
    activation-term shift ("u", added to the activation term's exponent, not to the law's
    linear predictor) on rows whose activations are quantized."""
    return {
        "a": np.ones(d.n),
        "b": -d.bits_c,
        "c": d.per_channel_by.get(g, d.per_channel),
        "n": -d.log_n_c,
        "q": np.minimum(d.bits_c, 0.0) ** 2,
        "r": d.act_q * np.maximum(4.0 - d.act_c, 0.0),
        "u": d.act_q,
        "s": np.ones(d.n),
    }


def part_of(kind: str) -> str:
    """The linear predictor effects of ``kind`` enter: "law" (the log-mean of weight
    quantization), "act" (the activation term's exponent) or "noise" (the log of the
    likelihood's scale)."""
    return "act" if kind in ACT_KINDS else "noise" if kind in NOISE_KINDS else "law"


def in_part(kind: str, part: str) -> bool:
    """Whether effects of ``kind`` enter the linear predictor ``part`` (:func:`part_of`)."""
    return part_of(kind) == part


def has_part_effects(effects: dict[str, Effect], part: str) -> bool:
    return any(in_part(k, part) for e in effects.values() for k in e.kinds)


def has_act_effects(effects: dict[str, Effect]) -> bool:
    return has_part_effects(effects, "act")


def design_matrix(
    d: Covariates,
    effects: dict[str, Effect],
    levels: dict[str, tuple[str, ...]],
    curvature: str = "quadratic",
    part: str = "law",
) -> np.ndarray:
    """X (N x P): the covariate each column of theta multiplies, row by row, in the law's
    linear predictor (``part="law"``), in the activation term's exponent shift (``"act"``:
    only the activation-term effects' columns are non-zero) or in the log noise scale
    (``"noise"``, likewise). Rows whose training tokens are
    unknown get 0 in the gamma_d column (see :func:`mean_degradation`)."""
    n = d.n
    cols = _columns(d, curvature)
    if part != "law":
        cols = [np.zeros(n) for _ in cols]
    for g, e in effects.items():
        k = len(levels[g]) + 1
        onehot = np.zeros((n, k))
        onehot[np.arange(n), d.idx[g]] = 1.0  # index -1 lands on the new-level column,
        if g in d.new_scale:  # which is a unit draw, scaled row by row (covariates.new_level_scale)
            unseen = d.idx[g] < 0
            onehot[unseen, -1] = d.new_scale[g][unseen]
        weights_g = weights(d, g)
        for kind in e.kinds:
            w = weights_g[kind] if in_part(kind, part) else np.zeros(n)
            cols.extend((onehot * w[:, None]).T)
    return np.column_stack(cols)


def _linear_predictor_graph(
    p: dict, d: Covariates, effects: dict[str, Effect], features: tuple[str, ...], curvature: str, part: str = "law"
):
    """X @ theta for PyTensor parameters, as gathers: each row reads its level's effect
    instead of multiplying a mostly-zero X. Its gradient costs N per effect rather than
    N x P: logp + gradient of the model without size slopes, on the shipped data, went from
    164 to 131 us. ``part`` as in :func:`design_matrix`."""
    import pytensor.tensor as pt

    names = [*SCALAR_TERMS, *(f"feat_{f}" for f in features)]
    eta = (
        pt.dot(np.column_stack(_columns(d, curvature)), pt.stack([p[name] for name in names]))
        if part == "law"
        else pt.zeros(d.n)
    )
    for g, e in effects.items():
        weights_g = weights(d, g)
        idx = d.idx[g]
        seen = idx >= 0  # a level the fit did not see (-1) has effect 0 in the PyMC model
        for kind in e.kinds:
            if not in_part(kind, part):
                continue
            eta = eta + p[f"{kind}_{g}"][np.where(seen, idx, 0)] * (weights_g[kind] * seen)
    return eta


def sparse_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(I, W), both N x J: each row's nonzero columns of ``x`` and their values, padded with
    column 0 and weight 0, so that ``x @ v == sum(W * v[I], axis=1)``. The PyMC model of a
    spec whose parameters are all linear in its standard-normal vector (packing.py) computes
    the linear predictor this way: one gather instead of one per effect."""
    nonzero = x != 0
    width = max(int(nonzero.sum(axis=1).max(initial=0)), 1)
    index = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]
    return index, np.take_along_axis(x, index, axis=1)


def stack_theta(
    p: dict, effects: dict[str, Effect], levels: dict[str, tuple[str, ...]], features: tuple[str, ...] = ()
) -> np.ndarray:
    """theta (P, S) in layout order from (1, S) scalars and (K + 1, S) effects."""
    return np.concatenate([p[name] for name, _ in layout(effects, levels, features)], axis=0)


def mean_degradation(
    p: dict,
    d: Covariates,
    effects: dict[str, Effect],
    levels: dict[str, tuple[str, ...]],
    xp,
    log_d_missing=None,
    features: tuple[str, ...] = (),
    curvature: str = "quadratic",
    eta_extra=None,
    act_extra=None,
    eta=None,
):
    """Expected degradation (nats per token) for every row of ``d``: shape (N,) with
    PyTensor parameters, (N, S) with NumPy draws. ``log_d_missing`` holds ln D (centred)
    for rows whose training tokens are unknown and 0 elsewhere, or is None when all are known;
    ``eta_extra`` (N, S), or None, is added to the linear predictor and ``act_extra`` to the
    activation term's exponent (predict: the effects of a query's second, third, ... unseen
    level of a grouping); ``eta``, or None, is the law's linear predictor X @ theta computed by
    the caller (the PyMC model, from sparse_rows)."""
    eta_act = None
    if xp is np:
        theta = stack_theta(p, effects, levels, features)
        eta = design_matrix(d, effects, levels, curvature).astype(theta.dtype) @ theta
        if has_act_effects(effects):
            eta_act = design_matrix(d, effects, levels, curvature, "act").astype(theta.dtype) @ theta
    else:
        if eta is None:
            eta = _linear_predictor_graph(p, d, effects, features, curvature)
        if has_act_effects(effects):
            eta_act = _linear_predictor_graph(p, d, effects, features, curvature, "act")
    if log_d_missing is not None:
        eta = eta + p["gamma_d"] * log_d_missing
    if eta_extra is not None:
        eta = eta + eta_extra
    if act_extra is not None:
        eta_act = act_extra if eta_act is None else eta_act + act_extra
    act_q, act_c = (d.act_q[:, None], d.act_c[:, None]) if xp is np else (d.act_q, d.act_c)
    return saturate(eta, p, act_q, act_c, xp, eta_act)


def saturate(eta, p: dict, act_q, act_c, xp, eta_act=None):
    """From the linear predictor to the mean degradation: exp, activation term (its exponent
    shifted by ``eta_act``, the activation-term effects, where given), ceiling."""
    mu = xp.exp(xp.minimum(eta, LOG_MU_MAX))
    if np.any(act_q):
        log_act = p["act_intercept"] - p["act_rate"] * act_c
        if eta_act is not None:
            log_act = log_act + eta_act
        mu = mu + act_q * xp.exp(xp.minimum(log_act, LOG_MU_MAX))
    return mu / (1.0 + mu / p["ceiling"])


def noise_covariates(d: Covariates, terms: tuple[str, ...]) -> np.ndarray:
    """(N, T): what each noise term (spec.NOISE_TERMS) multiplies, row by row."""
    cols = {"low_bits": lambda: np.maximum(-d.bits_c, 0.0), "per_channel": lambda: d.per_channel}
    assert set(cols) == set(NOISE_TERMS)
    return np.column_stack([cols[t]() for t in terms]) if terms else np.zeros((d.n, 0))


def noise_shift(
    p: dict,
    d: Covariates,
    effects: dict[str, Effect],
    levels: dict[str, tuple[str, ...]],
    xp,
    features=(),
    curvature="quadratic",
):
    """What the grouping effects of the noise scale (spec.NOISE_KINDS) add to the log of each
    row's scale: (N,) with PyTensor parameters, (N, S) with NumPy draws; None without them."""
    if not has_part_effects(effects, "noise"):
        return None
    if xp is np:
        theta = stack_theta(p, effects, levels, features)
        return design_matrix(d, effects, levels, curvature, "noise").astype(theta.dtype) @ theta
    return _linear_predictor_graph(p, d, effects, features, curvature, "noise")


def relative_noise(p: dict, d: Covariates, terms: tuple[str, ...], xp, by_level=None):
    """Scale of the Student-t on ln(delta + shift): ``noise_rel * exp(sum_t noise_t * x_t +
    by_level)``, ``by_level`` (or None) the grouping effects' (:func:`noise_shift`). A scalar (or
    (1, S) NumPy draws) without terms or shift; (N,) with PyTensor parameters, (N, S) with
    NumPy draws otherwise. Collapses below 4 bits and per-channel rows scatter more on the
    log scale than grouped 4-bit rows (models/hierarchical.toml)."""
    log_scale = None
    if terms:
        x = noise_covariates(d, terms)
        coef = [p[f"noise_{t}"] for t in terms]
        if xp is np:
            c = np.concatenate(coef, axis=0)  # (T, S)
            log_scale = x.astype(c.dtype) @ c
        else:
            import pytensor.tensor as pt

            log_scale = pt.dot(x, pt.stack(coef))
    if by_level is not None:
        log_scale = by_level if log_scale is None else log_scale + by_level
    return p["noise_rel"] if log_scale is None else p["noise_rel"] * xp.exp(log_scale)


def noise_scale(p: dict, mu):
    """Heteroscedastic scale of the raw-scale likelihood: a floor plus a part proportional to the mean."""
    return p["noise_floor"] + p["noise_rel"] * mu
