"""The mean degradation, written once for both PyTensor (fitting) and NumPy (prediction).

``p`` maps parameter names to values: PyTensor scalars/vectors inside the PyMC model, or
NumPy arrays with a leading draw axis for prediction (scalars shaped (S, 1), grouping
effects (S, K)).  Indexing with ``[..., idx]`` gathers per-row effects in both cases.

    log mu_w = intercept + sum_g a_g[idx_g]
               - (bits_rate + sum_g b_g[idx_g]) * (bits - 4) + curvature * (bits - 4)^2
               - gamma_n * (ln N - ln 7B) + gamma_d * (ln D - ln 1T)
               + per_channel * (c_pc + sum_g c_g[idx_g] + c_pcb * (4 - bits))
               + c_group * log2(group / 128)
    mu_u = mu_w + [act_bits < 16] * exp(act_intercept - act_rate * (act_bits - 4))
    mu = mu_u / (1 + mu_u / ceiling)

The curvature lets degradation accelerate into a collapse at low bits; the ceiling saturates collapses: a broken model's loss cannot grow without bound (the
data's worst cells sit near 9-11 nats), while exp(-bits/gamma) would.
"""

from __future__ import annotations

from qbayes.model.design import Design
from qbayes.model.spec import Effect

# exp() of the linear predictor is capped at exp(LOG_MU_MAX) ~ 30 nats (a perplexity ratio
# of 1e13), beyond any collapse in the data; it keeps early warm-up and prior draws finite.
LOG_MU_MAX = 3.4


def mean_degradation(p: dict, d: Design, effects: dict[str, Effect], log_d, xp):
    """Expected degradation (nats per token) for every row of ``d``. ``xp`` provides
    ``exp`` and ``minimum`` (numpy, or pytensor.tensor)."""
    eta = p["intercept"]
    rate = p["bits_rate"]
    pc = p["per_channel"]
    for g, e in effects.items():
        if e.per_channel:
            pc = pc + p[f"c_{g}"][..., d.idx[g]]
        if e.intercept:
            eta = eta + p[f"a_{g}"][..., d.idx[g]]
        if e.bits_slope:
            rate = rate + p[f"b_{g}"][..., d.idx[g]]
    eta = (eta - rate * d.bits_c + p["bits_curvature"] * d.bits_c**2 - p["gamma_n"] * d.log_n_c + p["gamma_d"] * log_d
           + d.per_channel * (pc - p["per_channel_bits"] * d.bits_c)
           + p["log2_group"] * d.log2_group)
    act = d.act_q * xp.exp(xp.minimum(p["act_intercept"] - p["act_rate"] * d.act_c, LOG_MU_MAX))
    mu = xp.exp(xp.minimum(eta, LOG_MU_MAX)) + act
    return mu / (1.0 + mu / p["ceiling"])


def noise_scale(p: dict, mu):
    """Heteroscedastic scale: an absolute floor plus a part proportional to the mean."""
    return p["noise_floor"] + p["noise_rel"] * mu
