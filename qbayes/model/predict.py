"""Posterior-predictive degradation and perplexity, in vectorised NumPy from the draws.

For a level the fit never saw (a new family, method, evaluation set, source) each draw
gets a fresh effect from that grouping's fitted population, N(0, sd); the row is
flagged. The appended new-level column sits last, so the design's index -1 picks it.
A model with unknown training tokens gets its latent ln D when the fit knew the model,
otherwise a draw from the fitted population of ln D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.model.build import LOG_SHIFT
from qbayes.model.design import Design, encode
from qbayes.model.fitfile import Fit
from qbayes.model.mean import mean_degradation, noise_scale

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CHUNK_ROWS = 20_000
DEFAULT_DRAWS = 1000
# predictive draws are capped at 15 nats (a perplexity ratio of 3e6), beyond the worst
# published collapse (11 nats); Student-t tails with small dof would otherwise overflow
DELTA_MAX = 15.0
FLAGS = {"family": "new_family", "method": "new_method", "eval_set": "new_eval_set", "w_kind": "new_w_kind"}


@dataclass
class Draws:
    """Posterior draws as NumPy: scalars (S, 1), grouping effects (S, K + 1) with the
    new-level column last, latent ln D (S, M + 1) with the population draw last."""

    p: dict[str, np.ndarray]
    log_tokens: np.ndarray

    @property
    def n(self) -> int:
        return self.log_tokens.shape[0]


def draws_from_fit(fit: Fit, *, n: int | None = DEFAULT_DRAWS, seed: int = 0) -> Draws:
    post = fit.posterior.stack(sample=("chain", "draw"))
    total = post.sizes["sample"]
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(total, size=n, replace=False)) if n and n < total else np.arange(total)
    s = len(take)

    def flat(name: str) -> np.ndarray:
        v = post[name].values  # (..., sample)
        return np.moveaxis(v, -1, 0)[take]

    p = {}
    for name in post.data_vars:
        if post[name].ndim == 1:
            p[name] = flat(name)[:, None]
    for g, e in fit.spec.effects.items():
        for kind, on in (("a", e.intercept), ("b", e.bits_slope), ("c", e.per_channel)):
            if on:
                new = p[f"sd_{kind}_{g}"] * rng.standard_normal((s, 1))
                p[f"{kind}_{g}"] = np.concatenate([flat(f"{kind}_{g}"), new], axis=1)
    pop = p["log_tokens_mean"] + p["log_tokens_sd"] * rng.standard_normal((s, 1))
    latent = flat("log_tokens_missing") if "log_tokens_missing" in post else np.empty((s, 0))
    return Draws(p=p, log_tokens=np.concatenate([latent, pop], axis=1))


def _log_d(draws: Draws, d: Design) -> np.ndarray:
    known = ~np.isnan(d.log_d_c)
    return np.where(known, np.nan_to_num(d.log_d_c), draws.log_tokens[:, d.tokens_idx])


def delta_draws(fit: Fit, d: Design, draws: Draws, *, rng: np.random.Generator, noise: bool = True) -> np.ndarray:
    """Degradation draws, shape (S, N): the mean, plus observation noise when ``noise``."""
    mu = mean_degradation(draws.p, d, fit.spec.effects, _log_d(draws, d), np)
    if not noise:
        return mu
    p = draws.p
    t = rng.standard_t(p["nu"], size=mu.shape) if "nu" in p else rng.standard_normal(mu.shape)
    if fit.spec.likelihood == "log_student_t":
        log_rep = np.minimum(np.log(mu + LOG_SHIFT) + p["noise_rel"] * t, np.log(DELTA_MAX + LOG_SHIFT))
        return np.exp(log_rep) - LOG_SHIFT
    return np.clip(mu + noise_scale(p, mu) * t, -DELTA_MAX, DELTA_MAX)


def predict_table(fit: Fit, table: pl.DataFrame, *, n_draws: int = DEFAULT_DRAWS, seed: int = 0,
                  quantiles=QUANTILES) -> pl.DataFrame:
    """Quantiles of predicted delta and perplexity for every row of a standard table,
    plus flags for levels the fit has not seen. Rows keep their order."""
    draws = draws_from_fit(fit, n=n_draws, seed=seed)
    rng = np.random.default_rng(seed + 1)
    fp16 = table.get_column("fp16_ppl").cast(pl.Float64).to_numpy()
    outs = []
    for start in range(0, table.height, CHUNK_ROWS):
        part = table.slice(start, CHUNK_ROWS)
        d = encode(part, fit.encoding)
        delta = delta_draws(fit, d, draws, rng=rng)
        q = np.quantile(delta, quantiles, axis=0)
        ppl_mean = np.mean(np.exp(delta), axis=0) * fp16[start:start + part.height]
        cols = {f"delta_q{round(p * 100):02d}": q[i] for i, p in enumerate(quantiles)}
        cols["delta_mean"] = delta.mean(axis=0)
        cols["ppl_mean"] = ppl_mean
        for g, flag in FLAGS.items():
            cols[flag] = d.new_level(g)
        cols["tokens_imputed"] = np.isnan(d.log_d_c)
        outs.append(pl.DataFrame(cols))
    res = pl.concat(outs) if outs else pl.DataFrame()
    ppl = [(pl.col(f"delta_q{round(p * 100):02d}").exp() * pl.col("fp16_ppl")).alias(f"ppl_q{round(p * 100):02d}")
           for p in quantiles]
    return pl.concat([table, res], how="horizontal").with_columns(ppl)
