"""Posterior-predictive degradation and perplexity, in vectorised NumPy from the draws.

:class:`Predictor` is a fit ready to predict; the functions before it are its NumPy core.

For a level the fit never saw (a new family, method, evaluation set, source) each draw
gets a fresh effect from that grouping's fitted population (see covariates.new_level_scale);
the row is flagged. The appended new-level column sits last, so the covariates' index -1 picks it;
a second, third, ... distinct unseen level of the same grouping gets an effect of its own
(:func:`extra_new_levels`).
A model with unknown training tokens gets its latent ln D when the fit knew the model,
otherwise a draw from the fitted population of ln D.
A spec with ``[collapse]`` draws each row and draw from the mixture of the law and the collapse
(collapse.py); ``p_collapse`` is the mean over draws of the collapse probability.
A spec with ``[cut]`` offsets the law's mean of each row in a cell (or model cell) the fit has
seen by that level's offset (cells.py), drawn per draw from its own training rows the first
time :meth:`Predictor.prepare` meets the level.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.model import cells, collapse, fitfile
from qbayes.model.covariates import Covariates, covariates
from qbayes.model.encoding import ReadTable
from qbayes.model.fitfile import Fit
from qbayes.model.mean import in_part, log_target, mean_degradation, noise_scale, noise_shift, relative_noise, weights

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# quantiles of the predictive given no collapse ([collapse] specs): Predictor.predict's
# delta_hold_qNN and ppl_hold_qNN, what ``qbayes predict`` prints after P(collapse)
HOLD_QUANTILES = (0.05, 0.5, 0.95)
CHUNK_ROWS = 1_000  # rows per chunk: (rows x draws) temporaries stay small enough to be reused
DEFAULT_DRAWS = 1000
# predictive draws are capped at 15 nats (a perplexity ratio of 3e6), beyond the worst
# published collapse (11 nats); Student-t tails with small dof would otherwise overflow
DELTA_MAX = 15.0
# the columns Predictor.predict adds to a table
NEW_LEVEL_FLAGS = {
    "family": "new_family",
    "arch": "new_arch",
    "method": "new_method",
    "eval_set": "new_eval_set",
    "w_kind": "new_w_kind",
    "format": "new_format",
    "cell": "new_cell",
}  # grouping -> flag of rows whose level the fit has not seen (cell: a [cut] spec's only)
PROVENANCE = ("block_design", "block_design_from", "train_tokens_b_used", "train_tokens_from")
# of those, what ``qbayes predict`` writes after the query's own columns
OUTPUT_COLUMNS = (
    "ppl_q05",
    "ppl_q25",
    "ppl_q50",
    "ppl_q75",
    "ppl_q95",
    "ppl_mean",
    "delta_q50",
    # the probability that the row collapses (a [collapse] spec's mixture; null for others)
    "p_collapse",
    *NEW_LEVEL_FLAGS.values(),
    "tokens_imputed",
    *PROVENANCE,
)


@dataclass
class Draws:
    """Posterior draws as NumPy with the draw axis last: scalars (1, S), grouping effects
    (K + 1, S) with the new-level row last, latent ln D (M + 1, S) with the population
    draw last."""

    p: dict[str, np.ndarray]
    log_tokens: np.ndarray
    seed: int = 0  # seeds the effects of further unseen levels (extra_new_levels)
    # their standard-normal draws, by (effect name, level number), made once per predict call
    fresh: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return self.log_tokens.shape[1]


def draws_from_fit(fit: Fit, *, n: int | None = DEFAULT_DRAWS, seed: int = 0, dtype=np.float32) -> Draws:
    """Thinned posterior draws in the layout above. Single precision by default: every
    quantity is on a log scale and far from float32's limits, and it halves the memory
    traffic that dominates prediction time."""
    post = fit.posterior
    post = post[[v for v in post.data_vars if post[v].size]]  # zero-sum vars of 1-level groupings are empty
    post = post.stack(sample=("chain", "draw"))
    total = post.sizes["sample"]
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(total, size=n, replace=False)) if n and n < total else np.arange(total)
    s = len(take)

    def flat(name: str) -> np.ndarray:
        if name not in post:  # the effects of an optional grouping the fit has no level of
            return np.empty((0, s), dtype=dtype)
        return np.ascontiguousarray(post[name].values[..., take], dtype=dtype)  # (..., S)

    p = {name: flat(name)[None, :] for name in post.data_vars if post[name].ndim == 1}
    for g, e in fit.spec.effects.items():
        for kind in e.kinds:  # a unit draw: each row scales it (covariates.new_level_scale)
            new = p[f"sd_{kind}_{g}"] * rng.standard_normal((1, s), dtype=dtype)
            p[f"{kind}_{g}"] = np.concatenate([flat(f"{kind}_{g}"), new], axis=0)
    if fit.spec.collapse is not None:
        for name in collapse.effect_names(fit.spec.collapse):  # a unit draw for an unseen level, as above
            new = p[f"sd_{name}"] * rng.standard_normal((1, s), dtype=dtype)
            p[name] = np.concatenate([flat(name), new], axis=0)
        enc = fit.encoding
        m, sd = collapse.population({**enc.known_vocab, **enc.family_vocab_seen})
        p[collapse.POP_LOG_VOCAB] = (m + sd * rng.standard_normal((1, s))).astype(dtype)
    for g in fit.spec.cut:  # not drawn yet (Predictor.prepare draws them); an unseen level has none
        n_levels = len(fit.encoding.levels[g])
        p[cut_name(g)] = np.concatenate([np.full((n_levels, s), np.nan, dtype=dtype), np.zeros((1, s), dtype=dtype)])
    if fit.spec.cut_collapse is not None:  # the cells' offsets of the collapse level, likewise
        p[CUT_COLLAPSE] = np.full_like(p[cut_name("cell")], np.nan)
        p[CUT_COLLAPSE][-1] = 0.0
    pop = p["log_tokens_mean"] + p["log_tokens_sd"] * rng.standard_normal((1, s), dtype=dtype)
    latent = flat("log_tokens_missing") if "log_tokens_missing" in post else np.empty((0, s))
    return Draws(p=p, log_tokens=np.concatenate([latent, pop], axis=0), seed=seed)


def extra_new_levels(fit: Fit, d: Covariates, draws: Draws, part: str = "law") -> np.ndarray | None:
    """(N, S): what the second, third, ... distinct unseen level of a grouping in ``d`` adds
    to the linear predictor (``part`` "law"; "act": to the activation term's exponent; "noise":
    to the log of the noise scale; see mean.design_matrix), or None if no grouping has more than one. The first unseen
    level takes the draws' new-level row; each further one gets its own fresh effect from the
    same population, independent of the first, so two new families (or methods) in one query
    table do not share an effect. Seeded by the draws' seed, the grouping and the level's
    number, so it does not depend on how the rows are chunked."""
    out = None
    for g, e in fit.spec.effects.items():
        ids = d.new_ids.get(g)
        if ids is None or ids.max(initial=-1) < 1:
            continue
        w = weights(d, g)
        rows = np.flatnonzero(ids >= 1)
        scale = d.new_scale[g][rows, None]
        levels = np.unique(ids[rows])
        at = np.searchsorted(levels, ids[rows])
        for kind in e.kinds:
            if not in_part(kind, part):
                continue
            name = f"{kind}_{g}"
            first = draws.p[name][-1]
            sd = draws.p[f"sd_{name}"][0]
            z = np.stack([_standard_normal(draws, name, int(j), first.dtype) for j in levels])
            if out is None:
                out = np.zeros((d.n, draws.n), dtype=first.dtype)
            out[rows] += (w[kind][rows, None] * scale).astype(first.dtype) * (sd * z[at] - first)
    return out


def _standard_normal(draws: Draws, name: str, j: int, dtype) -> np.ndarray:
    """(S,) standard normals for unseen level ``j`` of effect ``name``: one stream per level,
    so a level's draws do not depend on which rows share its chunk."""
    key = (name, j)
    if key not in draws.fresh:
        rng = np.random.default_rng([draws.seed, zlib.crc32(name.encode()), j])
        draws.fresh[key] = rng.standard_normal(draws.n, dtype=dtype)
    return draws.fresh[key]


def _log_d_missing(draws: Draws, d: Covariates) -> np.ndarray | None:
    """(N, S) ln D draws for rows without known tokens (0 elsewhere), or None if all known."""
    missing = np.isnan(d.log_d_c)
    if not missing.any():
        return None
    latent = draws.log_tokens[d.tokens_idx] - np.nan_to_num(d.log_d_shift)[:, None].astype(draws.log_tokens.dtype)
    return np.where(missing[:, None], latent, np.float32(0.0))


def law_params(fit: Fit, d: Covariates, draws: Draws) -> dict[str, np.ndarray]:
    """The draws' parameters as the law's mean reads them for rows ``d``: for a [collapse]
    spec, the ceiling is each row's collapse level (N, S) (collapse.py)."""
    if fit.spec.collapse is None:
        return draws.p
    gap = collapse.gap_draws(d, draws.p)
    return {**draws.p, "ceiling": collapse.level(draws.p, gap, np, d, fit.spec.collapse)}


def mean_draws(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray:
    """Mean degradation per row and draw, (N, S): the law's (a [collapse] spec's collapse
    regime is not in it; see :func:`collapse_draws`), offset by its seen cells for a spec
    with ``[cut]``."""
    mu = law_mean_draws(fit, d, draws)
    offset = cut_offset_rows(fit, d, draws)
    return mu if offset is None else cells.shifted_mean(mu, offset, fit.spec.log_shift)


def law_mean_draws(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray:
    """:func:`mean_draws` without the [cut] offsets: what the shared parameters alone say."""
    return mean_degradation(
        law_params(fit, d, draws),
        d,
        fit.spec.effects,
        fit.encoding.levels,
        np,
        _log_d_missing(draws, d),
        fit.encoding.feature_names,
        fit.spec.curvature,
        extra_new_levels(fit, d, draws),
        extra_new_levels(fit, d, draws, "act"),
    )


CUT_COLLAPSE = "cut_collapse"  # the Draws entry of the cells' collapse-level offsets, (C + 1, S)


def cut_name(g: str) -> str:
    """The Draws entry of grouping ``g``'s [cut] offsets, (L + 1, S), the last row 0 (an unseen level)."""
    return f"cut_{g}"


def cut_offset_rows(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray | None:
    """(N, S) the sum of each row's [cut] offsets (0 for levels the fit has not seen); None
    for a spec without [cut]. The offsets of the rows' levels must have been drawn
    (:func:`draw_cut_offsets`)."""
    if not fit.spec.cut:
        return None
    return _drawn(sum(draws.p[cut_name(g)][d.idx[g]] for g in fit.spec.cut))


def cut_collapse_rows(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray | None:
    """(N, S) each row's cell offset of its collapse level's ln(level + shift) (0 for a cell the
    fit has not seen); None for a spec without [cut] collapse."""
    if fit.spec.cut_collapse is None:
        return None
    return _drawn(draws.p[CUT_COLLAPSE][d.idx["cell"]])


def _drawn(offsets: np.ndarray) -> np.ndarray:
    """``offsets``, refused if some were never drawn (NaN: rows not read by Predictor.prepare)."""
    if np.isnan(offsets).any():
        raise RuntimeError("cut offsets used before they were drawn: prepare rows with Predictor.prepare")
    return offsets


def draw_cut_offsets(fit: Fit, d: Covariates, draws: Draws, training: Prepared) -> None:
    """Draws, in place in ``draws``, the [cut] offsets of the seen levels of rows ``d`` that
    are not drawn yet, each from its own training rows (``training``, the fit's rows
    prepared) given the offsets of the groupings before it."""
    for g in fit.spec.cut:
        _draw_levels(fit, draws, training, g, np.unique(d.idx[g]))


def _draw_levels(fit: Fit, draws: Draws, training: Prepared, g: str, levels: np.ndarray) -> None:
    table = draws.p[cut_name(g)]
    todo = [int(j) for j in levels if j >= 0 and np.isnan(table[j, 0])]
    if not todo:
        return
    t = training.covariates
    at = np.flatnonzero(np.isin(t.idx[g], todo))
    order = list(fit.spec.cut)
    earlier = order[: order.index(g)]
    for h in earlier:  # the levels these rows sit in, conditioned first
        _draw_levels(fit, draws, training, h, np.unique(t.idx[h][at]))
    shift = fit.spec.log_shift
    y = fit.data.get_column("delta").to_numpy()[at].astype(np.float64)
    d_at = t.rows(at)
    rows = cell_rows(fit, d_at, draws, log_target(y, shift))
    if earlier:
        before = sum(draws.p[cut_name(h)][t.idx[h][at]] for h in earlier).astype(np.float64)
        col = cut_collapse_rows(fit, d_at, draws)
        rows = rows.shifted(before, None if col is None else col.astype(np.float64))
    collapse_too = g == "cell" and fit.spec.cut_collapse is not None
    for j in todo:
        rng = np.random.default_rng([draws.seed, zlib.crc32(g.encode()), j])
        mine = rows.take(t.idx[g][at] == j)
        table[j] = cells.draw_offsets(mine, fit.spec.cut[g], rng)
        if collapse_too:  # the collapse level's offset, given the law's
            mine = mine.shifted(table[j].astype(np.float64)[None])
            draws.p[CUT_COLLAPSE][j] = cells.draw_offsets(mine, fit.spec.cut_collapse, rng, collapse=True)


def cell_rows(fit: Fit, d: Covariates, draws: Draws, y: np.ndarray) -> cells.CellRows:
    """Training rows ``d`` with targets ``y`` (ln(delta + shift)) under the draws, without
    [cut] offsets: the likelihood a level's offset is conditioned on."""
    p = {k: v.astype(np.float64) for k, v in law_params(fit, d, draws).items()}
    mu = law_mean_draws(fit, d, draws).astype(np.float64)
    shift = fit.spec.log_shift
    noise = noise_shift_draws(fit, d, draws)
    scale = relative_noise(p, d, fit.spec.noise, np, None if noise is None else noise.astype(np.float64))
    loc = np.log(mu + shift)
    nu = p["nu"][0]
    rows = cells.CellRows(y=y, loc=loc, scale=np.broadcast_to(scale, loc.shape), nu=nu, const=cells.log_t_const(nu))
    if fit.spec.collapse is None:
        return rows
    return dataclasses.replace(
        rows,
        logit=collapse.logit(p, d, mu, fit.spec.collapse, shift, np),
        slope=p["collapse_b"][0],
        col_loc=np.log(p["ceiling"] + shift),
        col_sd=p["collapse_sd"][0],
    )


def noise_shift_draws(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray | None:
    """(N, S) what the grouping effects of the noise scale add to its log (mean.noise_shift),
    unseen levels included as in :func:`mean_draws`; None where the spec has none."""
    shift = noise_shift(
        draws.p, d, fit.spec.effects, fit.encoding.levels, np, fit.encoding.feature_names, fit.spec.curvature
    )
    extra = extra_new_levels(fit, d, draws, "noise")
    if extra is not None:
        shift = extra if shift is None else shift + extra
    return shift


def _noise(p: dict, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if "nu" not in p:
        return rng.standard_normal(shape).astype(p["noise_rel"].dtype)
    return rng.standard_t(np.broadcast_to(p["nu"], shape)).astype(p["noise_rel"].dtype)


@dataclass(frozen=True)
class CollapseDraws:
    """A [collapse] spec's regime per row and draw, (N, S): the collapse level (nats), the
    probability of the collapse, and (once drawn) the law's draws of ln(delta + shift)."""

    level: np.ndarray
    probability: np.ndarray
    law: np.ndarray | None = None


def collapse_draws(fit: Fit, d: Covariates, draws: Draws, mu: np.ndarray) -> CollapseDraws | None:
    """The collapse regime of rows ``d`` whose law means are ``mu``; None without [collapse]."""
    spec = fit.spec.collapse
    if spec is None:
        return None
    p = law_params(fit, d, draws)
    level = p["ceiling"]
    offset = cut_collapse_rows(fit, d, draws)
    if offset is not None:  # a seen cell's collapse level, from its own rows (cells.py)
        level = cells.shifted_mean(level, offset, fit.spec.log_shift)
    return CollapseDraws(level=level, probability=collapse.probability(p, d, mu, spec, fit.spec.log_shift))


def expected_draws(fit: Fit, d: Covariates, draws: Draws) -> np.ndarray:
    """(N, S) the degradation each draw expects, without observation noise: the law's mean,
    or for a [collapse] spec the mixture's, (1 - p) * law mean + p * collapse level."""
    mu = mean_draws(fit, d, draws)
    parts = collapse_draws(fit, d, draws, mu)
    if parts is None:
        return mu
    return (1.0 - parts.probability) * mu + parts.probability * parts.level


def log_shifted_draws(
    fit: Fit,
    d: Covariates,
    draws: Draws,
    *,
    rng: np.random.Generator,
    independent_noise: bool = False,
    regime: list | None = None,
) -> np.ndarray:
    """Draws of ln(delta + shift), (N, S), for the log_student_t likelihood (capped at
    DELTA_MAX, or collapse.DELTA_MAX for a [collapse] spec, whose rows are drawn from the
    mixture). ``regime``, a list, receives the :class:`CollapseDraws` (None without [collapse])."""
    mu = mean_draws(fit, d, draws)
    shape = mu.shape if independent_noise else (1, draws.n)
    shift = fit.spec.log_shift
    y = np.log(mu + shift)
    y += relative_noise(draws.p, d, fit.spec.noise, np, noise_shift_draws(fit, d, draws)) * _noise(draws.p, shape, rng)
    cap = DELTA_MAX
    parts = collapse_draws(fit, d, draws, mu)
    if parts is not None:
        cap = collapse.DELTA_MAX
        u = rng.random(shape).astype(y.dtype)
        z = rng.standard_normal(shape).astype(y.dtype)
        parts = dataclasses.replace(parts, law=np.minimum(y, np.float32(np.log(DELTA_MAX + shift))))
        y = collapse.mix(y, np.log(parts.level + shift), draws.p["collapse_sd"], parts.probability, u, z)
    if regime is not None:
        regime.append(parts)
    return np.minimum(y, np.float32(np.log(cap + shift)), out=y)


def delta_draws(
    fit: Fit,
    d: Covariates,
    draws: Draws,
    *,
    rng: np.random.Generator,
    independent_noise: bool = False,
) -> np.ndarray:
    """Degradation draws, shape (N, S): the mean plus observation noise (the mean alone is
    :func:`mean_draws`).

    The noise scale and dof are per draw, so by default one Student-t variate per draw,
    shared by all rows, gives every row exactly its marginal predictive distribution at
    1/N of the cost; rows are then correlated with each other, which per-row quantiles do
    not see. Statistics across rows of one replicated data set (posterior predictive
    checks) need ``independent_noise=True``."""
    if fit.spec.likelihood == "log_student_t":
        y = log_shifted_draws(fit, d, draws, rng=rng, independent_noise=independent_noise)
        return np.exp(y) - fit.spec.log_shift
    mu = mean_draws(fit, d, draws)
    t = _noise(draws.p, mu.shape if independent_noise else (1, draws.n), rng)
    return np.clip(mu + noise_scale(draws.p, mu) * t, -DELTA_MAX, DELTA_MAX)


def row_quantiles(y: np.ndarray, quantiles) -> np.ndarray:
    """np.quantile(y, quantiles, axis=1) (linear interpolation), shape (len(quantiles), N),
    from one sort of each row in place: SIMD sorting beats numpy's selection ~10x here.
    ``y``'s rows come back sorted (their means and other order-free statistics keep)."""
    y.sort(axis=1)
    pos = np.asarray(quantiles, dtype=np.float64) * (y.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, y.shape[1] - 1)
    w = (pos - lo).astype(y.dtype)
    return (y[:, lo] * (1 - w) + y[:, hi] * w).T


def weighted_row_quantiles(y: np.ndarray, w: np.ndarray, quantiles) -> np.ndarray:
    """(len(quantiles), N): per row of ``y`` (N, S), the quantiles of its values weighted by
    ``w`` (N, S) (the first value whose cumulative weight reaches each level)."""
    order = np.argsort(y, axis=1)
    ys = np.take_along_axis(y, order, axis=1)
    cw = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1, dtype=np.float64)
    cw /= np.maximum(cw[:, -1:], 1e-300)
    at = np.stack([(cw < q).sum(axis=1) for q in quantiles])  # (Q, N)
    return np.take_along_axis(ys, np.minimum(at, y.shape[1] - 1).T, axis=1).T


def _summarise_chunk(fit: Fit, d: Covariates, draws: Draws, rng, quantiles, fp16: np.ndarray) -> dict:
    """Quantiles (taken before the monotone transforms, on the log scale where possible)
    and the mean perplexity for one chunk of rows."""
    regime = []
    if fit.spec.likelihood == "log_student_t":
        y = log_shifted_draws(fit, d, draws, rng=rng, regime=regime)
        q = np.exp(row_quantiles(y, quantiles)) - fit.spec.log_shift
        delta = np.exp(y, out=y)
        delta -= fit.spec.log_shift
    else:
        delta = delta_draws(fit, d, draws, rng=rng)
        q = row_quantiles(delta, quantiles)
    # float64 whatever the draws' precision: a chunk with an unseen level computes in another
    # precision than one without, and the chunks are stacked into one column
    cols = {f"delta_{_q(p)}": q[i].astype(np.float64) for i, p in enumerate(quantiles)}
    cols["delta_mean"] = delta.mean(axis=1, dtype=np.float64)
    parts = regime[0] if regime else None
    cols["p_collapse"] = np.full(d.n, np.nan) if parts is None else parts.probability.mean(axis=1, dtype=np.float64)
    if parts is not None:  # the predictive given that the row does not collapse
        hold = weighted_row_quantiles(parts.law, 1.0 - parts.probability, HOLD_QUANTILES)
        for i, p in enumerate(HOLD_QUANTILES):
            cols[f"delta_hold_{_q(p)}"] = np.exp(hold[i].astype(np.float64)) - fit.spec.log_shift
    cols["ppl_mean"] = np.exp(delta, out=delta).mean(axis=1, dtype=np.float64) * fp16
    return cols


@dataclass(frozen=True)
class Prepared:
    """Rows ready to predict: the table as given (``query``), as the fit reads it
    (``read``), and its covariates."""

    query: pl.DataFrame
    read: ReadTable
    covariates: Covariates


class Predictor:
    """A fitted model that predicts. It thins the posterior once (``n_draws`` draws,
    chosen with ``seed``), reads every table as the fit read its training rows
    (:meth:`Encoding.read <qbayes.model.encoding.Encoding.read>`: respelling, block
    design, training tokens), and gives each level the fit has not seen a fresh effect
    from its grouping's population, flagged in :meth:`predict`'s output. ``qbayes predict``,
    ``choose``, ``validate``, ``report`` and ``suggest`` all predict through it."""

    def __init__(self, fit: Fit, *, n_draws: int | None = DEFAULT_DRAWS, seed: int = 0):
        self.fit = fit
        self.seed = seed
        self.draws = draws_from_fit(fit, n=n_draws, seed=seed)
        # every (column, value, level) respelling made so far, for the command line to report
        self.respelled: list[tuple[str, str, str]] = []
        self._training: Prepared | None = None  # the fit's own rows, prepared once a [cut] offset is needed

    def with_draws(self, draws: Draws) -> Predictor:
        """This predictor with other draws of the same fit (conditioning.condition's)."""
        other = copy.copy(self)
        other.draws = draws
        return other

    @classmethod
    def load(cls, path: str | os.PathLike, *, n_draws: int | None = DEFAULT_DRAWS, seed: int = 0) -> Predictor:
        return cls(fitfile.load(path), n_draws=n_draws, seed=seed)

    def prepare(self, table: pl.DataFrame, *, one_new_level: tuple[str, ...] = ()) -> Prepared:
        """``table`` (a standard table) read and turned into covariates. Groupings named in
        ``one_new_level`` are read as one level the fit has not seen, for every row
        (cross-validation scores held-out rows as coming from a new source)."""
        read = self.fit.encoding.read(table)
        self.respelled += [r for r in read.respelled if r not in self.respelled]
        covs = covariates(read)
        for g in one_new_level:
            covs = covs.as_one_new_level(g)
        if self.fit.spec.cut:
            if self._training is None:
                train = self.fit.encoding.read(self.fit.data)
                self._training = Prepared(query=self.fit.data, read=train, covariates=covariates(train))
            draw_cut_offsets(self.fit, covs, self.draws, self._training)
        return Prepared(query=table, read=read, covariates=covs)

    def mean(self, rows: Prepared) -> np.ndarray:
        """Mean degradation per row and draw, (N, S), without observation noise."""
        return mean_draws(self.fit, rows.covariates, self.draws)

    def expected(self, rows: Prepared) -> np.ndarray:
        """The degradation each draw expects, (N, S), collapses included (:func:`expected_draws`)."""
        return expected_draws(self.fit, rows.covariates, self.draws)

    def delta(
        self, rows: Prepared, *, rng: np.random.Generator | None = None, independent_noise: bool = False
    ) -> np.ndarray:
        """Posterior-predictive degradation draws, (N, S), observation noise included (see
        :func:`delta_draws`); ``rng`` defaults to one seeded with the predictor's seed + 1."""
        rng = np.random.default_rng(self.seed + 1) if rng is None else rng
        return delta_draws(self.fit, rows.covariates, self.draws, rng=rng, independent_noise=independent_noise)

    def predict(self, rows: pl.DataFrame | Prepared, *, quantiles=QUANTILES) -> pl.DataFrame:
        """``rows`` (a standard table, or one prepared, in order) followed by quantiles of predicted
        delta and perplexity (``delta_qNN``, ``ppl_qNN``, means), ``p_collapse`` (the mean
        probability of the collapse regime for a [collapse] spec, null otherwise; such a spec
        also adds ``delta_hold_qNN`` and ``ppl_hold_qNN`` at :data:`HOLD_QUANTILES`, the
        predictive given that the row does not collapse), flags for levels the fit has
        not seen (:data:`NEW_LEVEL_FLAGS`), ``tokens_imputed`` where ln D is drawn from the
        population, and :data:`PROVENANCE`: the block design each row was predicted with and
        where it came from ("query", "fit", "known_families", or null for a design the fit
        cannot name; both null for a model without design effects), likewise its training
        tokens."""
        rows = rows if isinstance(rows, Prepared) else self.prepare(rows)
        table = rows.query
        rng = np.random.default_rng(self.seed + 1)
        fp16 = table.get_column("fp16_ppl").cast(pl.Float64).to_numpy()
        # a block design or a format only matters (and is only flagged as new) in a model
        # with effects of it
        uses_arch = any(g in self.fit.spec.effects for g in ("arch", "arch_method"))
        flagged = {"arch": uses_arch, "format": "format" in self.fit.spec.effects, "cell": "cell" in self.fit.spec.cut}
        read = rows.read
        none = pl.Series([None] * table.height, dtype=pl.String)
        provenance = {
            "block_design": read.table.get_column("arch") if uses_arch else none,
            "block_design_from": read.sources.get_column("block_design_from") if uses_arch else none,
            "train_tokens_b_used": read.table.get_column("train_tokens_b"),
            "train_tokens_from": read.sources.get_column("train_tokens_from"),
        }
        outs = []
        for start in range(0, table.height, CHUNK_ROWS):
            sl = slice(start, start + CHUNK_ROWS)
            d = rows.covariates.rows(sl)
            cols = _summarise_chunk(self.fit, d, self.draws, rng, quantiles, fp16[sl])
            for g, flag in NEW_LEVEL_FLAGS.items():
                cols[flag] = d.new_level(g) if flagged.get(g, True) else np.zeros(d.n, dtype=bool)
            cols["tokens_imputed"] = np.isnan(d.log_d_c)
            cols.update({c: v[sl] for c, v in provenance.items()})
            if self.fit.encoding.features:  # a feature model given a row without its features predicts the average
                cols["features_missing"] = d.feats_missing.any(axis=1)
            outs.append(pl.DataFrame(cols))
        res = pl.concat(outs) if outs else pl.DataFrame()
        ppl = [(pl.col(f"delta_{_q(p)}").exp() * pl.col("fp16_ppl")).alias(f"ppl_{_q(p)}") for p in quantiles]
        if self.fit.spec.collapse is not None:
            ppl += [
                (pl.col(f"delta_hold_{_q(p)}").exp() * pl.col("fp16_ppl")).alias(f"ppl_hold_{_q(p)}")
                for p in HOLD_QUANTILES
            ]
        out = pl.concat([table, res], how="horizontal").with_columns(ppl)
        return out.with_columns(pl.col("p_collapse").fill_nan(None)) if "p_collapse" in out.columns else out


def _q(p: float) -> str:
    return f"q{round(p * 100):02d}"
