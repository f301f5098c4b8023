"""Cross-validation over families of Bayesian models against baselines.

Two schemes (:data:`SCHEMES`) say which families each held-out family is predicted from:

* ``lofo``, leave one family out: from every other family;
* ``forward``: from the families released before it (``models.released``), which asks
  what users ask: how will the next generation quantize? A family with no earlier family
  is not a fold.

Every model yields predictive quantiles of delta on the grid ``QGRID`` for the held-out
family's rows; all scores come from those quantiles, so the Bayesian models and the
baselines are judged by one piece of code:

* MdAE / MAE of the median;
* coverage of the central 50% and 90% intervals, and of every central interval 10..90%
  (the calibration curve);
* CRPS, approximated as twice the mean pinball loss over the grid;
* the gap in MdAE between the first Bayesian model and every other model, with a
  paired bootstrap interval (:func:`mdae_gaps`);
* the Brier score of P(delta > 1 nat) (evaluation/exceed.py): from each model's draws or
  quantiles, and from two classifiers made for that question, whose results carry no
  quantiles (``q`` None) and are scored by it alone.

:func:`summarise` gathers the scores into a :class:`~qbayes.evaluation.summary.ValidationSummary`
(the records ``qbayes validate --json`` writes). :func:`predictions_table` lays the
held-out rows side by side with every model's predictive quantiles, so that where a
model loses (which family, bits, method) can be looked at row by row rather than through
the summaries alone.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.errors import QBayesError, unknown
from qbayes.evaluation import exceed
from qbayes.evaluation.baselines import BASELINES
from qbayes.evaluation.summary import (
    BrierScore,
    CalibrationPoint,
    CellScores,
    FoldConvergence,
    FoldScores,
    MdaeGap,
    ModelScores,
    Scores,
    ValidationSettings,
    ValidationSummary,
    as_float,
)
from qbayes.model import conditioning
from qbayes.model.encoding import family_tokens
from qbayes.model.fit import FitOptions, fit_table
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor, row_quantiles
from qbayes.model.spec import load_spec

QGRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # 0.05 .. 0.95
NOMINAL = np.round(np.arange(0.1, 0.91, 0.1), 1)
# every posterior draw of a fold's fit (4 x 500 with validate's defaults): the predictive
# median of a held-out row is itself a Monte Carlo estimate. With 1,000 draws per fold, runs of
# one model moved the overall MdAE by up to 0.007 (2026-11-25; README), partly because the fold
# fits themselves differed between runs
BAYES_DRAWS = None
GAP_LEVEL = 0.9  # central probability of the bootstrap interval on MdAE gaps
GAP_BOOT = 2000


SCHEMES = ("lofo", "forward")
# how a held-out family's models reveal rows (docs/observed.md), fixed before any score was seen:
# "nearest4", per model the rows of the family's most common method nearest 4 bits per weight
# (what a user runs first); "rtn", per model its RTN rows nearest 4 bits per weight (none where
# the model has no RTN row)
REVEAL_RULES = ("nearest4", "rtn")


@dataclass(frozen=True)
class Fold:
    """One held-out family and the families it is predicted from."""

    family: str
    train: tuple[str, ...]


def family_release(models: pl.DataFrame) -> dict[str, dt.date | None]:
    """Family -> the first release among its models (None where no model has a date)."""
    rel = models.group_by("family").agg(pl.col("released").min())
    return dict(zip(rel["family"].to_list(), rel["released"].to_list()))


def make_folds(
    families_in_data: Sequence[str],
    *,
    scheme: str,
    released: dict[str, dt.date | None] | None = None,
    only: Sequence[str] = (),
) -> list[Fold]:
    """The folds of ``scheme`` over the families of the training table (``only``: just these
    held-out families). Raises before any fitting when a family is unknown, when the forward
    scheme meets a family without a release date, or when a named family (or, by default,
    every family) has no family released before it."""
    if scheme not in SCHEMES:
        raise unknown("validation scheme", scheme, SCHEMES)
    fams = sorted(set(families_in_data))
    for f in only:
        if f not in fams:
            raise unknown("family", f, fams)
    if len(fams) < 2:
        raise QBayesError(f"cross-validation over families needs at least 2 families; the data have {fams}")
    held = list(only) or fams
    if scheme == "lofo":
        return [Fold(f, tuple(x for x in fams if x != f)) for f in held]
    released = released or {}
    undated = [f for f in fams if released.get(f) is None]
    if undated:
        raise QBayesError(
            f"forward validation orders families by release date, and {', '.join(undated)} "
            "has none: give its models a date in models.released (data/published/release_dates.csv)"
        )
    folds = [Fold(f, tuple(x for x in fams if released[x] < released[f])) for f in held]
    first = [fo.family for fo in folds if not fo.train]
    if only and first:
        raise QBayesError(
            f"forward validation: no family in the data was released before {first[0]} "
            f"({released[first[0]]}), so it has nothing to be predicted from"
        )
    folds = [fo for fo in folds if fo.train]
    if not folds:
        raise QBayesError("forward validation: no family has a family released before it")
    return sorted(folds, key=lambda fo: (released[fo.family], fo.family))


@dataclass
class FoldResult:
    family: str
    model: str
    y: np.ndarray
    q: np.ndarray | None  # (len(QGRID), N); None for a classifier of delta > 1 nat (exceed.CLASSIFIERS)
    convergence: FoldConvergence | None = None  # Bayesian models: how the fold's fit converged
    rows: pl.DataFrame | None = None  # the held-out rows (the standard table), in the order of y
    obs_ess: float | None = None  # with revealed rows: the conditioning's effective sample size
    p_exceed: np.ndarray | None = None  # (N,) P(delta > 1 nat) (exceed.py)


def with_quantiles(results: list[FoldResult]) -> list[FoldResult]:
    """The results that carry predictive quantiles (every model but the classifiers)."""
    return [r for r in results if r.q is not None]


def _qidx(p: float) -> int:
    return int(np.argmin(np.abs(QGRID - p)))


def coverage(y: np.ndarray, q: np.ndarray, level: float) -> float:
    lo, hi = q[_qidx((1 - level) / 2)], q[_qidx((1 + level) / 2)]
    return float(np.mean((y >= lo) & (y <= hi)))


def crps(y: np.ndarray, q: np.ndarray) -> float:
    diff = y[None, :] - q
    pinball = np.maximum(QGRID[:, None] * diff, (QGRID[:, None] - 1) * diff)
    return float(2 * pinball.mean())


def scores(y: np.ndarray, q: np.ndarray) -> Scores:
    med = q[_qidx(0.5)]
    ok = ~np.isnan(med)
    y, q, med = y[ok], q[:, ok], med[ok]
    if y.size == 0:  # no row this model predicts (a baseline with no cell for them): no scores
        return Scores(n=0)
    return Scores(
        n=int(y.size),
        mdae=as_float(np.median(np.abs(y - med))),
        mae=as_float(np.mean(np.abs(y - med))),
        cov50=as_float(coverage(y, q, 0.5)),
        cov90=as_float(coverage(y, q, 0.9)),
        crps=as_float(crps(y, q)),
    )


def reveal_mask(test: pl.DataFrame, k: int, rule: str) -> np.ndarray:
    """Which rows of a held-out family its models reveal: per model, ``k`` rows chosen by
    ``rule`` (:data:`REVEAL_RULES`), nearest 4 bits per weight first, then WikiText-2 before
    other evaluation sets, then in table order; a model keeps at least one row hidden."""
    if rule not in REVEAL_RULES:
        raise unknown("reveal rule", rule, REVEAL_RULES)
    mask = np.zeros(test.height, dtype=bool)
    if k <= 0:
        return mask
    method = pl.col("method").str.to_lowercase()
    if rule == "nearest4":
        common = test.group_by(method.alias("m")).len().sort(["len", "m"], descending=[True, False])["m"][0]
        eligible = method == common
    else:
        eligible = method == "rtn"
    order = (
        test.with_row_index("_i")
        .filter(eligible)
        .with_columns((pl.col("bits") - 4.0).abs().alias("_far"), (pl.col("eval_set") != "wikitext2").alias("_other"))
        .sort(["_far", "_other", "_i"])
    )
    size = test.group_by("model").len()
    limit = dict(zip(size["model"].to_list(), [min(k, n - 1) for n in size["len"].to_list()]))
    for model, rows in order.group_by("model", maintain_order=True):
        mask[rows["_i"].head(limit[model[0]]).to_numpy()] = True
    return mask


def bayes_quantiles(
    fit: Fit, test: pl.DataFrame, *, seed: int, revealed: pl.DataFrame | None = None
) -> tuple[np.ndarray, float | None, np.ndarray]:
    """Predictive quantiles (QGRID) of the held-out rows. They come from a study of unknown
    protocol: all of them are scored as one new source. With ``revealed`` rows (a training
    table of the same family) the predictions condition on them (conditioning.condition),
    as ``qbayes predict --observed`` does. Each published source of the family is then a new
    source of its own, shared by its revealed and scored rows: a row revealed from one paper
    says nothing about another paper's protocol (every row's marginal prediction is the same
    as with one new source for all). Returns the quantiles, with revealed rows the update's
    effective sample size (else None), and each row's P(delta > 1 nat) from the draws."""
    predictor = Predictor(fit, n_draws=BAYES_DRAWS, seed=seed)
    if revealed is None or revealed.height == 0:
        delta = predictor.delta(predictor.prepare(test, one_new_level=("source",)))
        p = exceed.from_draws(delta)
        return row_quantiles(delta, QGRID), None, p
    unseen = pl.concat_str(pl.lit("held-out "), pl.col("source").fill_null("")).alias("source")
    observed = conditioning.observed_training(revealed.with_columns(unseen), "revealed rows", own_source=False)
    queries = test.drop("delta", "doubt", strict=False).with_columns(unseen)
    cond = conditioning.condition(predictor, observed, queries, same_source=False)
    delta = cond.predictor.delta(cond.rows)
    p = exceed.from_draws(delta)
    return row_quantiles(delta, QGRID), cond.update.ess, p


def reveal_name(model: str, k: int, reveals: Sequence[int]) -> str:
    """A model's name in the results: as it is without reveals, else with its K."""
    return model if tuple(reveals) == (0,) else f"{model} K={k}"


def run(
    table: pl.DataFrame,
    *,
    bayes_models: Sequence[str],
    baselines: Sequence[str],
    opts: FitOptions,
    folds: Sequence[Fold],
    seed: int = 0,
    progress: Callable[[str], None] = lambda msg: None,
    reveals: Sequence[int] = (0,),
    reveal_rule: str = "nearest4",
    classifiers: Sequence[str] = (),
) -> list[FoldResult]:
    """Fit every model once per fold (:func:`make_folds`) and collect its quantile predictions
    for the held-out family's rows. For each K in ``reveals`` the family's models reveal K
    rows (:func:`reveal_mask`): the baselines train on them too, the Bayesian models
    condition on them without a refit; every K is scored on the same rows, those not
    revealed at the largest K, so the scores compare across K. ``classifiers``
    (exceed.CLASSIFIERS) give P(delta > 1 nat) only, trained as the baselines are."""
    specs = {name: load_spec(name) for name in bayes_models}
    out = []
    for fold in folds:
        fam = fold.family
        train = table.filter(pl.col("family").is_in(list(fold.train)))
        held = table.filter(pl.col("family") == fam)
        scored = ~reveal_mask(held, max(reveals), reveal_rule)
        test = held.filter(pl.Series(scored))
        y = test.get_column("delta").to_numpy()
        masks = {k: reveal_mask(held, k, reveal_rule) for k in reveals}
        shown = {k: held.filter(pl.Series(m)) for k, m in masks.items()}
        for name in baselines:
            for k in reveals:
                progress(f"{fam}: {name}, K={k}")
                model = BASELINES[name]() if name != "random_forest" else BASELINES[name](seed=seed)
                fitted = model.fit(pl.concat([train, shown[k]], how="vertical_relaxed") if k else train)
                q = fitted.quantiles(test, QGRID)
                p = exceed.from_quantiles(q, QGRID)
                out.append(FoldResult(fam, reveal_name(name, k, reveals), y, q, rows=test, p_exceed=p))
        for name in classifiers:
            for k in reveals:
                progress(f"{fam}: {name}, K={k}")
                model = exceed.CLASSIFIERS[name]() if name != "exceed_forest" else exceed.CLASSIFIERS[name](seed=seed)
                fitted = model.fit(pl.concat([train, shown[k]], how="vertical_relaxed") if k else train)
                p = fitted.probability(test)
                out.append(FoldResult(fam, reveal_name(name, k, reveals), y, None, rows=test, p_exceed=p))
        for name in bayes_models:
            progress(f"{fam}: {name} (sampling)")
            fit = fit_table(train, specs[name], opts)
            conv = fit.info.convergence
            read = family_tokens(held) if specs[name].tokens == "family" else held
            for k in reveals:
                progress(f"{fam}: {name}, K={k}")
                q, ess, p = bayes_quantiles(
                    fit,
                    read.filter(pl.Series(scored)),
                    seed=seed,
                    revealed=read.filter(pl.Series(masks[k])) if k else None,
                )
                out.append(
                    FoldResult(
                        fam,
                        reveal_name(name, k, reveals),
                        y,
                        q,
                        convergence=FoldConvergence(
                            max_rhat=as_float(conv.max_rhat),
                            divergences=int(conv.divergences),
                            min_ess_bulk=as_float(conv.min_ess_bulk),
                        ),
                        rows=test,
                        obs_ess=ess,
                        p_exceed=p,
                    )
                )
    return out


# the columns of a held-out row that say what it is, in predictions_table's output
ROW_COLUMNS = (
    "family",
    "arch",
    "model",
    "params_b",
    "method",
    "w_bits",
    "group_size",
    "act_bits",
    "eval_set",
    "source",
    "fp16_ppl",
    "delta",
)
PREDICTION_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def predictions_table(results: list[FoldResult]) -> pl.DataFrame:
    """One row per held-out row and model: what the row is (:data:`ROW_COLUMNS`, ``delta``
    observed), the model's predictive quantiles of delta (``delta_q05`` .. ``delta_q95``),
    ``obs_ess`` (with revealed rows, the conditioning's effective sample size; else null),
    ``abs_error`` of its median, whether the 90% interval covers the observation, and
    ``p_exceed_1nat``, the model's P(delta > 1 nat) (a classifier's row has only this)."""
    frames = []
    for r in results:
        if r.rows is None:
            raise ValueError(f"fold {r.family}/{r.model} has no rows: it was not made by crossval.run")
        n = len(r.y)
        cols = {
            f"delta_q{round(p * 100):02d}": np.full(n, np.nan) if r.q is None else r.q[_qidx(p)].astype(np.float64)
            for p in PREDICTION_QUANTILES
        }
        cols["p_exceed_1nat"] = np.full(n, np.nan) if r.p_exceed is None else r.p_exceed.astype(np.float64)
        frames.append(
            r.rows.select([c for c in ROW_COLUMNS if c in r.rows.columns]).with_columns(
                pl.lit(r.model).alias("predicted_by"),
                pl.lit(r.family).alias("held_out"),
                pl.lit(r.obs_ess, dtype=pl.Float64).alias("obs_ess"),
                **cols,
            )
        )
    if not frames:
        return pl.DataFrame()
    return (
        pl.concat(frames, how="diagonal_relaxed")
        .with_columns(
            pl.col("p_exceed_1nat", *(f"delta_q{round(p * 100):02d}" for p in PREDICTION_QUANTILES)).fill_nan(None),
        )
        .with_columns(
            (pl.col("delta") - pl.col("delta_q50")).abs().alias("abs_error"),
            pl.col("delta").is_between(pl.col("delta_q05"), pl.col("delta_q95")).alias("covered90"),
        )
    )


def _abs_errors(results: list[FoldResult], model: str) -> dict[str, np.ndarray]:
    """|delta - predictive median| of ``model``, per held-out family."""
    return {r.family: np.abs(r.y - r.q[_qidx(0.5)]) for r in results if r.model == model}


def mdae_gaps(
    results: list[FoldResult], *, reference: str, n_boot: int = GAP_BOOT, level: float = GAP_LEVEL, seed: int = 0
) -> list[MdaeGap]:
    """MdAE of ``reference`` minus MdAE of every other model (negative: ``reference`` is
    better), with a paired bootstrap interval.

    Each replicate resamples the held-out rows with replacement within each family and
    scores both models on the same rows. The interval says how much a gap rests on which
    rows of these families were published; it cannot say how the gap would move with other
    families. ``p_reference_better`` is the share of replicates with a negative gap."""
    results = with_quantiles(results)
    ref_by_family = _abs_errors(results, reference)
    families = sorted(ref_by_family)
    sizes = [ref_by_family[f].size for f in families]
    starts = np.cumsum([0, *sizes[:-1]])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([s + rng.integers(0, n, size=(n_boot, n)) for s, n in zip(starts, sizes)], axis=1)
    ref = np.concatenate([ref_by_family[f] for f in families])
    out = []
    for m in dict.fromkeys(r.model for r in results):
        if m == reference:
            continue
        by_family = _abs_errors(results, m)
        if by_family.keys() != ref_by_family.keys():
            continue
        other = np.concatenate([by_family[f] for f in families])
        ok = ~(np.isnan(ref) | np.isnan(other))
        a, b = np.where(ok, ref, np.nan), np.where(ok, other, np.nan)
        boot = np.nanmedian(a[idx], axis=1) - np.nanmedian(b[idx], axis=1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        out.append(
            MdaeGap(
                model=m,
                reference=reference,
                n=int(ok.sum()),
                gap=as_float(np.median(ref[ok]) - np.median(other[ok])),
                lo=as_float(lo),
                hi=as_float(hi),
                level=as_float(level),
                p_reference_better=as_float(np.mean(boot < 0)),
            )
        )
    return out


@dataclass(frozen=True)
class RevealScores:
    """One model at one K of ``qbayes validate --reveal``: over ``rows`` ("all" or "3+ bits")
    of every fold, the median absolute error, the median width of the 90% interval and its
    coverage."""

    model: str
    k: int
    rows: str
    n: int
    mdae: float
    width90: float
    cov90: float


def reveal_scores(results: list[FoldResult], reveals: Sequence[int]) -> list[RevealScores]:
    """Error and width against K, per model (names from :func:`reveal_name`)."""
    results = with_quantiles(results)
    out = []
    names = list(dict.fromkeys(r.model for r in results))
    bases = list(dict.fromkeys(n.rsplit(" K=", 1)[0] for n in names))
    for base in bases:
        for k in reveals:
            rs = [r for r in results if r.model == reveal_name(base, k, reveals)]
            if not rs:
                continue
            y = np.concatenate([r.y for r in rs])
            q = np.concatenate([r.q for r in rs], axis=1)
            bits = np.concatenate([r.rows.get_column("w_bits").cast(pl.Float64).to_numpy() for r in rs])
            for label, keep in (("all", np.ones(y.size, dtype=bool)), ("3+ bits", bits >= 3)):
                yy, qq = y[keep], q[:, keep]
                width = qq[_qidx(0.95)] - qq[_qidx(0.05)]
                out.append(
                    RevealScores(
                        model=base,
                        k=int(k),
                        rows=label,
                        n=int(yy.size),
                        mdae=as_float(np.nanmedian(np.abs(yy - qq[_qidx(0.5)]))),
                        width90=as_float(np.nanmedian(width)),
                        cov90=as_float(coverage(yy, qq, 0.9)),
                    )
                )
    return out


def row_cells(rows: pl.DataFrame) -> np.ndarray:
    """Each held-out row's kind, for the per-kind scores: its nominal weight bits (2 or
    fewer, 3, 4, 5 or more) and whether it has groups or one scale per channel, e.g.
    "3 bits, groups". Rows of one kind are alike in how much they degrade, so a model's
    errors read per kind say where it can be trusted."""
    bits = np.round(rows.get_column("w_bits").cast(pl.Float64).to_numpy())
    label = np.where(
        bits <= 2, "≤2 bits", np.where(bits >= 5, "≥5 bits", np.char.add(bits.astype(int).astype(str), " bits"))
    )
    grouped = rows.get_column("group_size").is_not_null().to_numpy()
    return np.char.add(label.astype(str), np.where(grouped, ", groups", ", per channel"))


CELL_ORDER = tuple(f"{b}, {g}" for b in ("≤2 bits", "3 bits", "4 bits", "≥5 bits") for g in ("groups", "per channel"))


def _per_cell(m: str, rs: list[FoldResult]) -> list[CellScores]:
    """Scores of model ``m`` per kind of row (:func:`row_cells`), pooled over held-out families."""
    if any(r.rows is None for r in rs):
        return []
    y = np.concatenate([r.y for r in rs])
    q = np.concatenate([r.q for r in rs], axis=1)
    cells = np.concatenate([row_cells(r.rows) for r in rs])
    return [CellScores(c, m, scores(y[cells == c], q[:, cells == c])) for c in CELL_ORDER if (cells == c).any()]


def summarise(
    results: list[FoldResult], settings: ValidationSettings, *, reference: str | None = None
) -> ValidationSummary:
    """The validation summary: overall, over rows of 3 or more nominal bits
    (``overall_3bits``), per family, per kind of row (nominal bits, groups or per channel;
    when the folds carry their rows), calibration curve, and the
    MdAE gaps of ``reference`` (a model name) to every other model, and the Brier score of
    P(delta > 1 nat) of every model that gives it, overall and per held-out family."""
    brier = brier_scores(results)
    results = with_quantiles(results)
    models = list(dict.fromkeys(r.model for r in results))
    overall, overall_3bits, per_family, per_cell, calibration = [], [], [], [], []
    for m in models:
        rs = [r for r in results if r.model == m]
        y = np.concatenate([r.y for r in rs])
        q = np.concatenate([r.q for r in rs], axis=1)
        overall.append(ModelScores(m, scores(y, q)))
        if all(r.rows is not None for r in rs):
            three = np.concatenate([r.rows.get_column("w_bits").cast(pl.Float64).to_numpy() >= 3 for r in rs])
            overall_3bits.append(ModelScores(m, scores(y[three], q[:, three])))
        per_cell += _per_cell(m, rs)
        for r in rs:
            per_family.append(FoldScores(r.family, m, scores(r.y, r.q), r.convergence))
        ok = ~np.isnan(q[_qidx(0.5)])
        for level in NOMINAL:
            calibration.append(CalibrationPoint(m, as_float(level), as_float(coverage(y[ok], q[:, ok], level))))
    gaps = mdae_gaps(results, reference=reference) if reference in models else []
    return ValidationSummary(
        models=tuple(models),
        overall=tuple(overall),
        overall_3bits=tuple(overall_3bits),
        per_family=tuple(per_family),
        per_cell=tuple(per_cell),
        calibration=tuple(calibration),
        gaps=tuple(gaps),
        brier=tuple(brier),
        settings=settings,
    )


def brier_scores(results: list[FoldResult]) -> list[BrierScore]:
    """Per model with P(delta > 1 nat): its Brier score over all held-out rows ("all") and
    per held-out family, with the share of rows above 1 nat."""
    out = []
    for m in dict.fromkeys(r.model for r in results if r.p_exceed is not None):
        rs = [r for r in results if r.model == m and r.p_exceed is not None]
        parts = [("all", np.concatenate([r.y for r in rs]), np.concatenate([r.p_exceed for r in rs]))]
        parts += [(r.family, r.y, r.p_exceed) for r in rs]
        for family, y, p in parts:
            out.append(
                BrierScore(
                    model=m,
                    family=family,
                    n=int(np.sum(~np.isnan(p))),
                    brier=as_float(exceed.brier(y, p)),
                    share=as_float(float(np.mean(exceed.outcome(y)[~np.isnan(p)])) if y.size else math.nan),
                )
            )
    return out
