"""Fitting the accuracy model: training rows -> PyMC graph -> posterior -> :class:`AccuracyFit`.

The model (docs/accuracy.md): for a configuration c scored on task t, with the task's
chance level h_t and the unquantized model's accuracy f,

    retained = exp(-k_t * Δ_c^alpha)                 the share of f - h_t that survives
    acc ~ Normal(h_t + (f - h_t) * retained, sd)
    sd^2 = se_binomial(f, n_t)^2 + tau_t^2 + (eta * (f - h_t) * (1 - retained))^2

with ln k_t ~ Normal(mu_k, sd_k) partially pooled across tasks (a task the fit has not seen
draws its rate from that population), tau_t ~ HalfNormal(2) the excess noise of a task
(protocol, prompt and evaluation differences beyond the binomial error of its n_t
questions; not pooled: most tasks' excess is near zero next to their binomial error, and a
pooled log-normal spread formed a funnel NUTS mixed through slowly), and eta the extra
spread of large drops. Δ_c is latent: ln(Δ_c + shift)
~ Normal(loc_c, scale_c), its prior the perplexity model's posterior predictive for the
configuration, or its measured value where the source prints both perplexities.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from qbayes.model import diagnostics
from qbayes.model.accuracy.fitfile import AccuracyFit, AccuracyFitInfo, PerplexityFitRef, table_hash
from qbayes.model.accuracy.law import DELTA_FLOOR, TAU_NEW
from qbayes.model.accuracy.rows import AccuracyRows
from qbayes.model.fitfile import Fit, package_versions
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig, sample
from qbayes.model.tasks import Tasks

# Priors. A 4-bit configuration (Δ ~ 0.05-0.1 nats) costs a few percent of the accuracy
# above chance and a 2-bit collapse (Δ > 2) nearly all of it, so rates near 0.5 per nat:
# ln k ~ N(ln 0.5, 1) spans 0.07-3.5 within 2 sd.
K_PRIOR = (math.log(0.5), 1.0)
SD_K_PRIOR = 0.7  # half-normal: tasks differ several-fold in fragility
ALPHA_PRIOR = (0.0, 0.3)  # log-normal: the curve's shape in Δ, 1 = exponential decay
TAU_PRIOR = TAU_NEW  # half-normal, points: a task's excess noise
ETA_PRIOR = 0.3  # half-normal: spread of large drops, as a share of the drop


@dataclass(frozen=True)
class AccuracyFitOptions:
    sampler: str = DEFAULT_SAMPLER
    # the latent Δ of configurations with a narrow prior (measured) next to wide ones curve the
    # posterior: the shipped fit had 10 divergences in 4 x 1,000 draws at 0.9, 2 in 4 x 1,500 at
    # 0.95 and none at 0.98 (qbayes fit-accuracy's default); cross-validation folds use 0.95
    sample: SampleConfig = SampleConfig(draws=500, tune=500, chains=4, target_accept=0.95)
    exclude_families: tuple[str, ...] = ()


def build_model(data: AccuracyRows, tasks: Tasks) -> tuple[pm.Model, list[str]]:
    """The PyMC model of ``data`` and its task axis (the tasks of the rows, sorted)."""
    rows = data.rows
    names = sorted(set(rows["task"]))
    t = np.searchsorted(names, rows["task"].to_numpy())
    c = rows["config"].to_numpy()
    f = rows["fp16_acc"].to_numpy()
    h = rows["chance"].to_numpy()
    se = np.array([tasks.get(task).binomial_se(a) for task, a in zip(rows["task"], f)])
    loc = data.configs["log_delta_loc"].to_numpy()
    scale = data.configs["log_delta_scale"].to_numpy()
    coords = {"task": names, "config": np.arange(len(loc))}
    with pm.Model(coords=coords) as model:
        log_delta = pm.Normal("log_delta", loc, scale, dims="config")
        delta = pt.maximum(pt.exp(log_delta) - data.shift, 0.0) + DELTA_FLOOR
        log_k_mu = pm.Normal("log_k_mu", *K_PRIOR)
        sd_k = pm.HalfNormal("sd_k", SD_K_PRIOR)
        z_k = pm.Normal("z_k", 0.0, 1.0, dims="task")
        k = pm.Deterministic("k", pt.exp(log_k_mu + sd_k * z_k), dims="task")
        alpha = pm.LogNormal("alpha", *ALPHA_PRIOR)
        tau = pm.HalfNormal("tau", TAU_PRIOR, dims="task")
        eta = pm.HalfNormal("eta", ETA_PRIOR)
        retained = pt.exp(-k[t] * delta[c] ** alpha)
        above = f - h
        mu = h + above * retained
        sd = pt.sqrt(se**2 + tau[t] ** 2 + (eta * above * (1.0 - retained)) ** 2)
        pm.Normal("acc", mu, sd, observed=rows["acc"].to_numpy())
    return model, names


def fit_rows(
    data: AccuracyRows, tasks: Tasks, ppl_fit: Fit, ppl_fit_path: str, opts: AccuracyFitOptions = AccuracyFitOptions()
) -> AccuracyFit:
    """Fit the accuracy model to ``data`` (built with ``ppl_fit``'s posterior predictive)."""
    model, names = build_model(data, tasks)
    result = sample(model, sampler=opts.sampler, config=opts.sample, more=diagnostics.more_draws_help)
    conv = diagnostics.check(result.tree)
    ref = PerplexityFitRef(
        path=str(ppl_fit_path),
        model=ppl_fit.spec.name,
        data_hash=ppl_fit.info.data_hash,
        posterior_checksum=ppl_fit.posterior_checksum,
        created=ppl_fit.info.created,
    )
    info = AccuracyFitInfo(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sampler=opts.sampler,
        sample_config=opts.sample,
        convergence=conv,
        versions=package_versions(),
        command=" ".join(sys.argv),
        n_rows=data.rows.height,
        n_configs=data.configs.height,
        data_hash=table_hash(data.rows, data.configs),
        exclude_families=tuple(opts.exclude_families),
        tasks=tuple(names),
        shift=data.shift,
        ppl_fit=ref,
        compile_s=round(result.compile_s, 3),
        sample_s=round(result.sample_s, 3),
    )
    return AccuracyFit(tree=result.tree, rows=data.rows, configs=data.configs, info=info)
