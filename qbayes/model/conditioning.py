"""What measured rows teach: a fit's posterior draws conditioned on rows the user measured,
without a refit (docs/observed.md).

Observed rows (:class:`Observed`) are quantized results in the query layout with their
measured degradation. They are read together with the rows to predict, so a level the fit
has not seen that both share (a new family, the user's own source, a new method, format kind
or evaluation set: any grouping of the spec) is one effect. Per posterior draw s those
unseen effects z (standard normal units, ``K`` of them) are importance-sampled under the
model's own likelihood: ``M`` draws of z from a defensive proposal (half the population
N(0, I), half a Gaussian fitted to a pilot run from the population), each weighted by the
likelihood of the observations times N(z; 0, I) / q(z). Their mean is the draw's marginal
likelihood L_s; one z is then resampled per draw by those weights, and the draws themselves
are resampled with probability proportional to L_s, which updates every effect the fit has
seen (and the noise, dof, scalar terms) the same way. The result is a set of equally weighted
draws that :class:`~qbayes.model.predict.Predictor` predicts with unchanged. A spec's [cut]
offsets of seen cells (cells.py) are part of each draw: they enter the observed rows'
likelihood as they are and are resampled with their draws.

The effective sample size of the draw weights, (sum L)^2 / sum L^2, says how far the fast
update can be trusted: observations far out in the posterior's tail leave few draws, and the
exact route is then a refit with the rows (``qbayes fit --observed``). Each observed row also
gets a two-sided posterior predictive p-value under the fit before conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.db.named_formats import expand as expand_formats
from qbayes.errors import QBayesError
from qbayes.model import collapse
from qbayes.model.cells import log_t_const, shifted_mean
from qbayes.model.covariates import Covariates
from qbayes.model.encoding import ReadTable
from qbayes.model.fitfile import Fit
from qbayes.model.mean import (
    design_matrix,
    has_act_effects,
    log_target,
    mean_degradation,
    noise_scale,
    part_of,
    relative_noise,
    saturate,
    stack_theta,
    weights,
)
from qbayes.model.predict import (
    Draws,
    Predictor,
    Prepared,
    _log_d_missing,
    cut_collapse_rows,
    cut_offset_rows,
    extra_new_levels,
    law_params,
    noise_shift_draws,
)
from qbayes.model.queries import QUERY_OPTIONAL, query_table

# the source of the user's own measurements, and of the rows predicted from them: a level of
# its own, so its offset from published tables is learned from the observed rows
OBSERVED_SOURCE = "observed"
PPL = "ppl"  # the measured perplexity column
# a row is an unquantized baseline when its method or format says so (or w_bits >= 16)
BASELINE_NAMES = ("none", "fp16", "bf16", "f16", "fp32", "f32", "baseline", "unquantized")
INNER_DRAWS = 256  # z draws per posterior draw
MIN_ESS = 100  # below this many effective draws the fast update is flagged as untrustworthy
SURPRISE_P = 0.01  # an observed row with a two-sided p-value below this is reported as surprising
# what ``qbayes predict --observed`` adds to each prediction
OUTPUT_COLUMNS = ("obs_ess", "obs_n", "obs_min_p")


@dataclass(frozen=True)
class Observed:
    """Measured quantized rows: ``table`` the standard table (queries.query_table, source
    :data:`OBSERVED_SOURCE`), ``delta`` their degradation ln ppl - ln fp16_ppl, ``row`` each
    one's row number in the user's file (1-based, for messages)."""

    table: pl.DataFrame
    delta: np.ndarray
    row: np.ndarray
    where: str

    @property
    def n(self) -> int:
        return self.table.height

    def training_rows(self) -> pl.DataFrame:
        """The rows as a training table (model.table.training_table's columns): what
        ``qbayes fit --observed`` adds to the database's rows."""
        return self.table.with_columns(
            pl.Series("delta", self.delta, dtype=pl.Float64), pl.lit(None, dtype=pl.String).alias("doubt")
        )


def _rows(mask: pl.Series | np.ndarray) -> list[int]:
    return (np.flatnonzero(np.asarray(mask)) + 1)[:5].tolist()


def _is_baseline(df: pl.DataFrame) -> pl.Series:
    """Rows that are unquantized baselines (by method, format, or w_bits >= 16)."""
    out = pl.Series([False] * df.height)
    for c in ("method", "format"):
        if c in df.columns:
            out |= df.get_column(c).cast(pl.String).str.strip_chars().str.to_lowercase().is_in(BASELINE_NAMES)
    if "w_bits" in df.columns:
        out |= (df.get_column("w_bits").cast(pl.Float64, strict=False) >= 16).fill_null(False)
    return out.fill_null(False)


def observed_rows(df: pl.DataFrame, where: str = "observed rows") -> Observed:
    """Observed rows from a table in the query layout plus the measured ``ppl``. The fp16
    perplexity is the row's ``fp16_ppl``, else that of a baseline row (method/format fp16,
    none, ...) of the same model and evaluation set. Refuses, with row numbers: a missing or
    non-numeric ppl, ppl <= 0 or NaN, a row without fp16 perplexity, and duplicates (same
    model and configuration) with different values."""
    if PPL not in df.columns:
        raise QBayesError(f"{where}: missing column '{PPL}' (the perplexity you measured)")
    df = df.with_row_index("_row", offset=1)
    ppl_s = df.get_column(PPL)
    if ppl_s.dtype == pl.String:
        ppl_s = ppl_s.str.strip_chars().replace("", None)
    ppl = ppl_s.cast(pl.Float64, strict=False)
    problems = []
    bad = ppl.is_null() | ppl.is_nan() | (ppl <= 0)
    if bad.fill_null(True).any():
        problems.append(f"column '{PPL}' must be a number > 0 (rows {_rows(bad.fill_null(True))})")
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    df = df.with_columns(ppl.alias(PPL))
    base = _is_baseline(df)
    quant, baselines = df.filter(~base), df.filter(base)
    if quant.height == 0:
        raise QBayesError(f"{where}: no quantized rows (only unquantized baselines)")
    for c in ("model", "eval_set"):
        if c not in df.columns:
            raise QBayesError(f"{where}: missing column '{c}'")
    fp16 = quant.get_column("fp16_ppl").cast(pl.Float64, strict=False) if "fp16_ppl" in quant.columns else None
    if baselines.height:
        key = baselines.group_by("model", "eval_set").agg(pl.col(PPL).n_unique().alias("k"), pl.col(PPL).first())
        clash = key.filter(pl.col("k") > 1)
        if clash.height:
            m = clash.row(0, named=True)
            rows = baselines.filter((pl.col("model") == m["model"]) & (pl.col("eval_set") == m["eval_set"]))["_row"]
            raise QBayesError(
                f"{where}: baseline rows of {m['model']} on {m['eval_set']} disagree (rows {rows.to_list()})"
            )
        joined = quant.join(
            key.select("model", "eval_set", pl.col(PPL).alias("_base")), on=["model", "eval_set"], how="left"
        )
        fill = joined.get_column("_base")
        fp16 = fill if fp16 is None else fp16.fill_null(fill)
    if fp16 is None or fp16.is_null().any():
        rows = quant["_row"].to_list() if fp16 is None else quant.filter(fp16.is_null())["_row"].to_list()
        raise QBayesError(
            f"{where}: no fp16 perplexity for rows {rows[:5]}: give 'fp16_ppl', or a row of the same model and "
            "evaluation set with method fp16"
        )
    quant = quant.with_columns(fp16.alias("fp16_ppl"), pl.lit(OBSERVED_SOURCE).alias("source"))
    row = quant.get_column("_row").to_numpy()
    body = quant.drop("_row", PPL)
    try:
        table = query_table(expand_formats(body, where, defaults=QUERY_OPTIONAL), where)
    except QBayesError as exc:  # query_table numbers rows among the quantized ones: say which file rows
        raise QBayesError(f"{exc} [row numbers count quantized rows only: file rows {row.tolist()[:20]}]") from exc
    delta = np.log(quant.get_column(PPL).to_numpy()) - np.log(table.get_column("fp16_ppl").to_numpy())
    config = ["model", "method", "w_bits", "group_size", "bits", "act_bits", "w_kind", "eval_set"]
    dup = table.select(config).with_columns(pl.Series("_d", delta), pl.Series("_row", row))
    groups = dup.group_by(config).agg(pl.col("_d").n_unique().alias("k"), pl.col("_row"))
    clash = groups.filter(pl.col("k") > 1)
    if clash.height:
        raise QBayesError(
            f"{where}: rows {clash['_row'][0].to_list()} measure the same configuration with different values; "
            "keep one (or their mean)"
        )
    keep = dup.select(pl.struct(config).is_first_distinct()).to_series()  # repeats of one value: once
    return Observed(table=table.filter(keep), delta=delta[keep.to_numpy()], row=row[keep.to_numpy()], where=where)


def observed_training(df: pl.DataFrame, where: str, *, own_source: bool = True) -> Observed:
    """Observed rows from a training table (model.table.training_table of a database that
    ``qbayes collect`` wrote), read as from :data:`OBSERVED_SOURCE`, or with ``own_source``
    False as from their own sources (cross-validation reveals published rows)."""
    if df.height == 0:
        raise QBayesError(f"{where}: no quantized rows with an unquantized baseline to condition on")
    delta = df.get_column("delta").to_numpy()
    table = df.drop("delta", "doubt", strict=False)
    if own_source:
        table = table.with_columns(pl.lit(OBSERVED_SOURCE, dtype=pl.String).alias("source"))
    return Observed(table=table, delta=delta, row=np.arange(1, df.height + 1), where=where)


def unmatched(observed: Observed, queries: pl.DataFrame) -> list[str]:
    """One line per observed row whose model, family and evaluation set all match no query:
    it still conditions the fit (shared method and source effects) but says nothing directly
    about a query's family, which the user should know."""
    out = []
    qs = {c: set(queries.get_column(c).to_list()) for c in ("model", "family", "eval_set")}
    for i, r in enumerate(observed.table.iter_rows(named=True)):
        miss = [c for c in ("model", "family", "eval_set") if r[c] not in qs[c]]
        if len(miss) == 3 or "family" in miss:
            out.append(
                f"{observed.where} row {observed.row[i]}: {r['model']} ({r['family']}) on {r['eval_set']} "
                f"matches no query's {', '.join(miss)}; used to condition the fit all the same"
            )
    return out


@dataclass(frozen=True)
class Units:
    """The unseen-level effects the observed rows touch: ``names[k]`` (effect name, level
    number), and ``loading`` (N_obs, K), what a unit z of each adds to each observed row's
    linear predictor in units of the grouping's sd (``sd[k]`` (S,) its sd per draw);
    ``act_loading`` (N_obs, K) the same for the activation term's exponent and
    ``noise_loading`` for the log of the noise scale (an effect adds to one of the three:
    mean.part_of)."""

    names: tuple[tuple[str, int], ...]
    loading: np.ndarray
    sd: np.ndarray  # (K, S)
    act_loading: np.ndarray
    noise_loading: np.ndarray


def _units(predictor: Predictor, d: Covariates) -> Units:
    names, sds = [], []
    cols = {"law": [], "act": [], "noise": []}
    n = d.n
    for g, e in predictor.fit.spec.effects.items():
        ids = d.new_ids.get(g)
        if ids is None:
            continue
        w = weights(d, g)
        for j in np.unique(ids[ids >= 0]):
            on = (ids == j).astype(np.float64) * d.new_scale[g]
            for kind in e.kinds:
                col = on * w[kind]
                if np.any(col != 0):
                    names.append((f"{kind}_{g}", int(j)))
                    for part, part_cols in cols.items():
                        part_cols.append(col if part_of(kind) == part else np.zeros(n))
                    sds.append(predictor.draws.p[f"sd_{kind}_{g}"][0].astype(np.float64))
    loading = {part: np.column_stack(c) if c else np.zeros((n, 0)) for part, c in cols.items()}
    return Units(
        names=tuple(names),
        loading=loading["law"],
        sd=np.array(sds) if sds else np.zeros((0, predictor.draws.n)),
        act_loading=loading["act"],
        noise_loading=loading["noise"],
    )


def _with_units(draws: Draws, units: Units, z: np.ndarray) -> Draws:
    """``draws`` (not modified) with unit effects set to ``z`` (K, S) standard normals."""
    p = dict(draws.p)
    fresh = dict(draws.fresh)
    for k, (name, j) in enumerate(units.names):
        if j == 0:
            p[name] = np.concatenate([p[name][:-1], (units.sd[k] * z[k]).astype(p[name].dtype)[None]], axis=0)
        else:
            fresh[(name, j)] = z[k].astype(p[name].dtype)
    return Draws(p=p, log_tokens=draws.log_tokens, seed=draws.seed, fresh=fresh)


def location_scale(
    fit: Fit, p: dict[str, np.ndarray], d: Covariates, mu: np.ndarray, noise: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's likelihood of rows with covariates ``d`` and mean degradation ``mu``
    (N, S) under draws ``p`` (``noise`` (N, S), or None, what grouping effects add to the log
    of the noise scale: predict.noise_shift_draws): its location and scale (N, S) per draw, on the scale the fit's
    target lives on (ln(delta + shift) for the log-scale Student-t, delta itself for the raw
    one). The one place conditioning reads the likelihood's form: the exact update of
    measured rows (:func:`update`) and the Gaussian form for rows not yet measured
    (:func:`likelihood_draws`) both go through it."""
    if fit.spec.likelihood == "log_student_t":
        scale = relative_noise(p, d, fit.spec.noise, np, noise).astype(np.float64)
        return np.log(mu + fit.spec.log_shift), np.broadcast_to(scale, mu.shape)
    return mu, noise_scale({k: v.astype(np.float64) for k, v in p.items()}, mu)


class _Likelihood:
    """The model's log-likelihood of the observed rows per draw, for any value of the unit
    effects: the linear predictor without them is computed once, and each z adds
    ``loading @ (sd * z)`` to it before the mean's saturation (mean.mean_degradation). A
    [collapse] spec's rows have the mixture's density (collapse.log_density), the law's
    ceiling being each row's collapse level, as in the fit."""

    def __init__(self, predictor: Predictor, d: Covariates, delta: np.ndarray, units: Units):
        fit, draws = predictor.fit, predictor.draws
        self.fit, self.d, self.units = fit, d, units
        self.base = _with_units(draws, units, np.zeros((len(units.names), draws.n)))
        self.collapse = fit.spec.collapse
        if self.collapse is not None:  # the law's ceiling: each row's collapse level (predict.law_params)
            p = {k: v.astype(np.float64) for k, v in law_params(fit, d, self.base).items()}
            self.base = Draws(p=p, log_tokens=self.base.log_tokens, seed=self.base.seed, fresh=self.base.fresh)
            self.col_loc = np.log(p["ceiling"] + fit.spec.log_shift)
            self.col_sd = p["collapse_sd"]
            offset = cut_collapse_rows(fit, d, self.base)  # a seen cell's collapse level (cells.py)
            if offset is not None:
                self.col_loc = self.col_loc + offset
        extra = extra_new_levels(fit, d, self.base)
        self.extra = np.zeros((d.n, draws.n)) if extra is None else extra.astype(np.float64)
        extra = extra_new_levels(fit, d, self.base, "act")
        self.act_extra = np.zeros((d.n, draws.n)) if extra is None else extra.astype(np.float64)
        self.log_d = _log_d_missing(self.base, d)
        noise = noise_shift_draws(fit, d, self.base)  # the noise scale's effects, units at 0
        self.noise0 = np.zeros((d.n, draws.n)) if noise is None else noise.astype(np.float64)
        self.nu = draws.p["nu"][0].astype(np.float64) if "nu" in draws.p else None
        self.y = delta[:, None]
        if fit.spec.likelihood == "log_student_t":
            self.y = log_target(self.y, fit.spec.log_shift)  # the fit's target
        # the Student-t density's constant per draw
        self.const = None if self.nu is None else log_t_const(self.nu)
        self.eta0 = None
        self.eta0, self.act0 = self._linear_predictor()
        cell = cut_offset_rows(fit, d, self.base)  # seen cells' [cut] offsets (cells.py), fixed per draw
        self.cell = None if cell is None else cell.astype(np.float64)

    def _linear_predictor(self) -> tuple[np.ndarray | None, np.ndarray]:
        """The linear predictor and the activation term's exponent shift without the unit
        effects, (N_obs, S) each, so that each z costs one saturation (mean.saturate) rather
        than a whole mean.mean_degradation; (None, ...) (the slow path) if that does not
        reproduce mean_degradation, which stays the definition."""
        fit, p = self.fit, self.base.p
        effects, levels = fit.spec.effects, fit.encoding.levels
        theta = stack_theta(p, effects, levels, fit.encoding.feature_names).astype(np.float64)
        eta = design_matrix(self.d, effects, levels, fit.spec.curvature) @ theta
        act = self.act_extra
        if has_act_effects(effects):
            act = act + design_matrix(self.d, effects, levels, fit.spec.curvature, "act") @ theta
        if self.log_d is not None:
            eta = eta + p["gamma_d"] * self.log_d
        eta = eta + self.extra
        zero = np.zeros_like(eta)
        if np.allclose(self._saturate(eta, act), self._mean(zero, zero), rtol=1e-4, atol=1e-7):
            return eta, act
        return None, act

    def _saturate(self, eta: np.ndarray, act: np.ndarray) -> np.ndarray:
        d = self.d
        return saturate(eta, self.base.p, d.act_q[:, None], d.act_c[:, None], np, act).astype(np.float64)

    def _mean(self, eta_units: np.ndarray, act_units: np.ndarray) -> np.ndarray:
        """The mean degradation with the unit effects adding ``eta_units`` (N_obs, S) to the
        linear predictor and ``act_units`` to the activation term's exponent."""
        if self.eta0 is not None:
            return self._saturate(self.eta0 + eta_units, self.act0 + act_units)
        return mean_degradation(
            self.base.p,
            self.d,
            self.fit.spec.effects,
            self.fit.encoding.levels,
            np,
            self.log_d,
            self.fit.encoding.feature_names,
            self.fit.spec.curvature,
            (self.extra + eta_units).astype(np.float32),
            (self.act_extra + act_units).astype(np.float32),
        ).astype(np.float64)

    def location_scale(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N_obs, S) location and scale of the likelihood with unit effects ``z`` (K, S)."""
        u = self.units.sd * z
        mu = self._mean(self.units.loading @ u, self.units.act_loading @ u)
        if self.cell is not None:
            mu = shifted_mean(mu, self.cell, self.fit.spec.log_shift)
        return location_scale(self.fit, self.base.p, self.d, mu, self.noise0 + self.units.noise_loading @ u)

    def probability(self, loc: np.ndarray) -> np.ndarray:
        """(N_obs, S) the collapse probability of rows whose law location is ``loc``."""
        mu = np.exp(loc) - self.fit.spec.log_shift
        return collapse.probability(self.base.p, self.d, mu, self.collapse, self.fit.spec.log_shift)

    def loglik(self, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(S,) log-likelihood of all observed rows at location and scale (N_obs, S)."""
        if self.collapse is not None:
            dens = collapse.log_density(
                self.y, loc, scale, self.nu, self.const, self.col_loc, self.col_sd, self.probability(loc)
            )
            return dens.sum(axis=0)
        x = (self.y - loc) / scale
        if self.nu is None:
            dens = -0.5 * x**2 - 0.5 * np.log(2 * np.pi)
        else:
            dens = self.const - (self.nu + 1) / 2 * np.log1p(x**2 / self.nu)
        return (dens - np.log(scale)).sum(axis=0)

    def below(self, loc: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N_obs, S): whether a replicate of each row, drawn per draw at location and scale,
        falls below the observation (a Monte Carlo estimate of the predictive CDF)."""
        t = rng.standard_normal(loc.shape) if self.nu is None else rng.standard_t(self.nu, size=loc.shape)
        y = loc + scale * t
        if self.collapse is not None:
            u, z = rng.random(loc.shape), rng.standard_normal(loc.shape)
            y = collapse.mix(y, self.col_loc, self.col_sd, self.probability(loc), u, z)
        return y <= self.y


@dataclass(frozen=True)
class Update:
    """The result of conditioning: ``draws`` equally weighted conditioned draws; ``ess`` the
    effective number of posterior draws behind them; ``inner_ess`` the mean effective number
    of unit-effect draws per posterior draw; ``p_value`` (N_obs,) each observed row's
    two-sided posterior predictive p-value before conditioning; ``units`` the unseen-level
    effects updated."""

    draws: Draws
    ess: float
    inner_ess: float
    p_value: np.ndarray
    units: tuple[tuple[str, int], ...]

    @property
    def trusted(self) -> bool:
        return self.ess >= MIN_ESS


def _log_normal_pdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """log N(z; mean, chol chol^T) for z (..., K)."""
    k = z.shape[-1]
    sol = np.linalg.solve(chol, (z - mean).reshape(-1, k).T).T.reshape(z.shape)
    return -0.5 * (sol**2).sum(-1) - np.log(np.diag(chol)).sum() - 0.5 * k * np.log(2 * np.pi)


def update(predictor: Predictor, d: Covariates, delta: np.ndarray, *, inner: int = INNER_DRAWS) -> Update:
    """Condition ``predictor``'s draws on observed rows whose covariates are ``d`` (read
    together with the rows to be predicted, so unseen levels are numbered alike) and whose
    degradations are ``delta``."""
    draws = predictor.draws
    s = draws.n
    rng = np.random.default_rng([predictor.seed, 32])
    units = _units(predictor, d)
    lik = _Likelihood(predictor, d, np.asarray(delta, dtype=np.float64), units)
    k = len(units.names)
    zs = rng.standard_normal((inner, k, s)) if k else np.zeros((1, 0, s))
    # pilot: z from the population; it gives the p-values and the proposal
    logl, below = [], []
    for z in zs:
        loc, scale = lik.location_scale(z)
        logl.append(lik.loglik(loc, scale))
        below.append(lik.below(loc, scale, rng).mean(axis=1))
    logl = np.stack(logl)  # (M, S)
    cdf = np.mean(below, axis=0)
    p_value = np.clip(2 * np.minimum(cdf, 1 - cdf), 0.0, 1.0)
    if k:
        w = np.exp(logl - logl.max())
        w /= w.sum()
        flat = zs.transpose(0, 2, 1).reshape(-1, k)  # (M * S, K)
        mean = w.reshape(-1) @ flat
        cov = (flat - mean).T @ ((flat - mean) * w.reshape(-1, 1)) * 2.0 + 1e-4 * np.eye(k)
        chol = np.linalg.cholesky(cov)
        # defensive mixture: half from the population, half from the fitted Gaussian
        half = inner // 2
        fitted = mean[None, :, None] + np.einsum("ij,mjs->mis", chol, rng.standard_normal((inner - half, k, s)))
        zs = np.concatenate([zs[:half], fitted], axis=0)
        zt = zs.transpose(0, 2, 1)  # (M, S, K)
        log_prior = _log_normal_pdf(zt, np.zeros(k), np.eye(k))
        log_q = np.logaddexp(log_prior, _log_normal_pdf(zt, mean, chol)) - np.log(2.0)
        logl = np.stack([lik.loglik(*lik.location_scale(z)) for z in zs]) + log_prior - log_q
    top = logl.max(axis=0)  # (S,)
    inner_w = np.exp(logl - top)  # (M, S)
    log_ml = top + np.log(inner_w.mean(axis=0))  # (S,) log marginal likelihood per draw
    inner_w /= inner_w.sum(axis=0)
    inner_ess = float(np.mean(1.0 / (inner_w**2).sum(axis=0)))
    outer = np.exp(log_ml - log_ml.max())
    outer /= outer.sum()
    ess = float(1.0 / (outer**2).sum())
    # one z per draw by its inner weights, then the draws by their marginal likelihoods
    u = rng.random(s)
    pick = np.minimum((inner_w.cumsum(axis=0) < u).sum(axis=0), len(zs) - 1)
    z = zs[pick, :, np.arange(s)].T  # (K, S)
    conditioned = _with_units(draws, units, z)
    take = _systematic(outer, rng)
    return Update(
        draws=_take(conditioned, take),
        ess=ess,
        inner_ess=inner_ess,
        p_value=p_value,
        units=units.names,
    )


def _systematic(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: len(w) indexes drawn with probabilities ``w``."""
    n = len(w)
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)


def _take(draws: Draws, idx: np.ndarray) -> Draws:
    """The draws at indexes ``idx`` (draw axis last), unseen-level normals included."""
    return Draws(
        p={k: v[..., idx] for k, v in draws.p.items()},
        log_tokens=draws.log_tokens[..., idx],
        seed=draws.seed,
        fresh={k: v[idx] for k, v in draws.fresh.items()},
    )


@dataclass(frozen=True)
class Conditioned:
    """Queries ready to predict with draws conditioned on observed rows: ``predictor``
    holds the conditioned draws, ``rows`` the queries read together with the observed
    rows, ``update`` what the conditioning did."""

    predictor: Predictor
    rows: Prepared
    update: Update
    observed: Observed

    def columns(self, queries: pl.DataFrame) -> pl.DataFrame:
        """:data:`OUTPUT_COLUMNS` per query: the update's ESS, how many observed rows are of
        the query's family, and the smallest p-value among them (null if none)."""
        obs = self.observed.table.select("family").with_columns(pl.Series("p", self.update.p_value))
        per = obs.group_by("family").agg(pl.len().alias("obs_n"), pl.col("p").min().alias("obs_min_p"))
        out = queries.select("family").join(per, on="family", how="left", maintain_order="left")
        return pl.DataFrame(
            {
                "obs_ess": np.full(queries.height, self.update.ess),
                "obs_n": out.get_column("obs_n").fill_null(0).cast(pl.Int64),
                "obs_min_p": out.get_column("obs_min_p"),
            }
        )


def as_observed_source(queries: pl.DataFrame) -> pl.DataFrame:
    """Queries predicted as the user's own measurements are: from :data:`OBSERVED_SOURCE`."""
    return queries.with_columns(pl.lit(OBSERVED_SOURCE, dtype=pl.String).alias("source"))


def check_fit(predictor: Predictor) -> None:
    """Refuses a fit that already holds observed rows (``qbayes fit --observed``): conditioning
    it again would count them twice."""
    if OBSERVED_SOURCE in predictor.fit.encoding.levels.get("source", ()):
        raise QBayesError(
            f"this fit was made with observed rows (source '{OBSERVED_SOURCE}'); it already conditions "
            "on them: predict from it without --observed"
        )


def condition(
    predictor: Predictor, observed: Observed, queries: pl.DataFrame, *, same_source: bool = True
) -> Conditioned:
    """``queries`` (a standard table) prepared for prediction from draws conditioned on
    ``observed``; the queries are read as from :data:`OBSERVED_SOURCE`, the observed rows'
    source, unless ``same_source`` is False (each keeps its own)."""
    check_fit(predictor)
    if same_source:
        queries = as_observed_source(queries)
    both = predictor.prepare(
        pl.concat([observed.table, queries.select(observed.table.columns)], how="vertical_relaxed")
    )
    n = observed.n
    upd = update(predictor, both.covariates.rows(slice(0, n)), observed.delta)
    read = both.read
    rows = Prepared(
        query=queries,
        read=ReadTable(
            table=read.table.slice(n),
            respelled=read.respelled,
            sources=read.sources.slice(n),
            encoding=read.encoding,
        ),
        covariates=both.covariates.rows(slice(n, None)),
    )
    return Conditioned(predictor=predictor.with_draws(upd.draws), rows=rows, update=upd, observed=observed)


def report(c: Conditioned) -> list[str]:
    """Lines for the user: the update's ESS (and the exact route when it is low), and each
    surprising observed row."""
    u = c.update
    lines = [
        f"conditioned on {c.observed.n} observed rows: effective sample size {u.ess:.0f} of "
        f"{c.predictor.draws.n} draws ({len(u.units)} unseen-level effects updated; {u.inner_ess:.0f} of "
        f"{INNER_DRAWS} effective effect draws per posterior draw)"
    ]
    if not u.trusted:
        lines.append(
            f"warning: effective sample size below {MIN_ESS}: the fast update is not to be trusted; "
            f"refit with the rows instead: qbayes fit --observed {c.observed.where} --out FIT.nc, "
            "then predict with --fit FIT.nc (without --observed)"
        )
    for i in np.flatnonzero(u.p_value < SURPRISE_P):
        r = c.observed.table.row(int(i), named=True)
        lines.append(
            f"surprising: {c.observed.where} row {c.observed.row[i]} ({r['model']}, {r['method']} "
            f"w{r['w_bits']:g} on {r['eval_set']}, delta {c.observed.delta[i]:.4f}) has posterior predictive "
            f"p = {u.p_value[i]:.3g} under the fit; what it teaches other methods and bits rests on the model's "
            "structure"
        )
    return lines


# Rows not measured yet (``qbayes suggest``'s candidate runs): what a row would teach before its
# value is known. The draws of the likelihood's location for all rows, read through the same
# :func:`location_scale` as the exact update, are approximated by a Gaussian, whose conditioning
# on a row is closed-form and does not depend on the value the row will turn out to have.


@dataclass(frozen=True)
class LikelihoodDraws:
    """Per row and posterior draw: ``eta`` (N, S), the location of the likelihood, and
    ``scale`` (N, S), its noise scale; ``nu`` (S,) its dof (None: normal noise). For the
    log-scale likelihood ``log_shift`` is its shift (eta = ln(mu + log_shift)); None on
    the raw scale."""

    eta: np.ndarray
    scale: np.ndarray
    nu: np.ndarray | None
    log_shift: float | None


def likelihood_draws(predictor: Predictor, table: pl.DataFrame | Prepared) -> LikelihoodDraws:
    """The likelihood's location and noise of every row of a standard table
    (queries.query_table), or of rows already prepared (:func:`condition`'s), from the same
    posterior draws. The rows are encoded together, so unseen levels they share (a new
    family, source or evaluation set) are one effect with one draw per sample, as in
    :meth:`Predictor.predict`."""
    fit, draws = predictor.fit, predictor.draws
    rows = table if isinstance(table, Prepared) else predictor.prepare(table)
    with np.errstate(over="ignore", invalid="ignore"):
        mu = predictor.mean(rows).astype(np.float64)
    eta, scale = location_scale(fit, draws.p, rows.covariates, mu, noise_shift_draws(fit, rows.covariates, draws))
    nu = draws.p["nu"][0].astype(np.float64) if "nu" in draws.p else None
    shift = fit.spec.log_shift if fit.spec.likelihood == "log_student_t" else None
    return LikelihoodDraws(eta=eta, scale=scale, nu=nu, log_shift=shift)


def effective_noise_var(*, scale: np.ndarray, nu: np.ndarray | None) -> np.ndarray:
    """(N,): the variance of a normal observation that carries as much information about
    the location as one Student-t observation does, averaged over draws. A t with scale s
    and dof nu has Fisher information (nu + 1) / ((nu + 3) s^2) for its location, so the
    variance is s^2 (nu + 3) / (nu + 1): finite for every nu, unlike the t's own variance
    s^2 nu / (nu - 2), and s^2 for normal noise."""
    factor = 1.0 if nu is None else (nu + 3.0) / (nu + 1.0)
    return np.mean(scale**2 * factor, axis=1)


def anomalies(eta: np.ndarray) -> np.ndarray:
    """(N, S) centred draws over sqrt(S): the covariance of the rows is ``A @ A.T``."""
    eta = np.asarray(eta, dtype=np.float64)
    return (eta - eta.mean(axis=1, keepdims=True)) / np.sqrt(eta.shape[1])


def single_reductions(*, cross: np.ndarray, var: np.ndarray, noise_var: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(C,): the weighted reduction of the targets' variance from measuring each candidate
    alone. ``cross`` (T, C) is Cov(targets, candidates), ``var`` (C,) the candidates'
    variances, ``noise_var`` (C,) their observation noise, ``weights`` (T,)."""
    return weights @ cross**2 / (np.maximum(var, 0.0) + noise_var)


def downdate(a: np.ndarray, row: int, noise_var: float) -> np.ndarray:
    """Anomalies (N, S) after observing row ``row`` with noise of variance ``noise_var``:
    Potter's square-root update, ``A - beta (A a) a^T`` with ``a = A[row]``, so that
    ``A' A'^T = P - P h h^T P / (h^T P h + noise_var)`` exactly."""
    x = a[row].copy()
    d = x @ x + noise_var
    if d <= 0:
        return a
    beta = 1.0 / (d + np.sqrt(noise_var * d))
    return a - beta * np.outer(a @ x, x)


def observe_gaussian(mean: np.ndarray, a: np.ndarray, rows, y, noise_var) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian (mean (N,), anomalies (N, S)) after observing ``y`` at ``rows`` (one
    after the other, each with its noise variance): the Kalman update that suggest's
    ranking assumes, used by its replay to update the draws."""
    mean = mean.copy()
    for r, obs, nv in zip(np.atleast_1d(rows), np.atleast_1d(y), np.atleast_1d(noise_var)):
        x = a[r]
        d = x @ x + nv
        if d > 0:
            mean += (a @ x) * (obs - mean[r]) / d
            a = downdate(a, int(r), float(nv))
    return mean, a
