"""Feature study: do Hessian, sharpness, SQNR and outlier features predict degradation
beyond size and bits (arXiv 2410.12119)? Held-out, leave one architecture or size out.

Target: ln(max(delta, 0) + sigma) on every row (see :mod:`qbayes.zoo.analysis`).
Base covariates: ln N, ln D, effective bits, log2 group (0 per-channel), per-channel flag,
and one-hot method, format kind (``w_kind``), evaluation set and calibration set. Each
feature set adds one group's columns (``feature_groups``), all of them, or is the
theory-driven predictor alone.

Feature transforms: SQNRs as they are (already logarithmic); strictly positive features
by ln; others (radial loss, which is negative where the landscape is flat within noise)
by asinh(x / median|x|). Missing values are filled with the training fold's median and
every column is standardised on the training fold. Learners: ridge regression (alpha by
efficient leave-one-out within the training fold) and a random forest, both seeded.

Permutation importance: the "all" model of each fold, each base block (a one-hot block
counts as one) and each feature column shuffled within the held-out fold; the rise of
the held-out MdAE (log scale, and delta), averaged over repeats and weighted over folds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV

from qbayes.zoo.analysis_heldout import SCHEMES, mdae_pair, onehot, scores
from qbayes.zoo.analysis_result import (
    BitsRho,
    FeatureSetColumns,
    FeatureStudy,
    FoldImprovement,
    HeldOut,
    Importance,
    Improvement,
    Score,
    Settings,
    Theory,
)
from qbayes.zoo.analysis_table import feature_groups

BASE_NUMERIC = ("log_n", "log_d", "bits", "log2_group", "per_channel")
BASE_CATEGORICAL = ("method", "w_kind", "eval_set", "calib")
IDENTITY = ("sqnr_db", "sqnr_min_db", *BASE_NUMERIC)
LEARNERS = ("ridge", "forest")


@dataclass(frozen=True)
class FeatureSet:
    name: str
    base: bool
    columns: tuple[str, ...]


def transform(table: pl.DataFrame, column: str) -> np.ndarray:
    x = table[column].cast(pl.Float64).to_numpy().astype(float)
    finite = x[np.isfinite(x)]
    if column in IDENTITY or finite.size == 0:
        return x
    if (finite > 0).all():
        return np.log(x)
    scale = np.median(np.abs(finite[finite != 0])) if (finite != 0).any() else 1.0
    return np.arcsinh(x / scale)


def feature_sets(table: pl.DataFrame, notes: list[str]) -> list[FeatureSet]:
    present = {c for c in table.columns if table[c].null_count() < table.height}
    sets, every = [FeatureSet("base", True, ())], []
    for group, cols in feature_groups(table).items():
        cols = [c for c in cols if c in present]
        if not cols:
            notes.append(f"feature group '{group}' has no values in the data: left out")
            continue
        sets.append(FeatureSet(group, True, tuple(cols)))
        every += [c for c in cols if c not in every]
    if every:
        sets.append(FeatureSet("all", True, tuple(every)))
    if "theory" in present:
        sets.append(FeatureSet("theory_only", False, ("theory",)))
    return sets


def design(columns: dict[str, np.ndarray], categorical: dict[str, np.ndarray], train: np.ndarray):
    """(X, blocks): numeric columns imputed and standardised on ``train``, then one-hot blocks."""
    parts, blocks, at = [], {}, 0
    for name, x in columns.items():
        fit = x[train & np.isfinite(x)]
        fill = float(np.median(fit)) if fit.size else 0.0
        x = np.where(np.isfinite(x), x, fill)
        mu, sd = (float(fit.mean()), float(fit.std())) if fit.size else (0.0, 0.0)
        parts.append(((x - mu) / (sd if sd > 0 else 1.0))[:, None])
        blocks[name], at = [at], at + 1
    for name, x in categorical.items():
        block = onehot(x)
        parts.append(block)
        blocks[name], at = list(range(at, at + block.shape[1])), at + block.shape[1]
    return np.hstack(parts), blocks


def learner(name: str, settings: Settings):
    if name == "ridge":
        return RidgeCV(alphas=settings.ridge_alphas)
    return RandomForestRegressor(
        n_estimators=settings.forest_trees,
        min_samples_leaf=settings.forest_min_leaf,
        max_features=0.5,
        random_state=settings.seed,
        n_jobs=1,
    )


def feature_study(table: pl.DataFrame, *, settings: Settings, sigma: float, notes: list[str]) -> FeatureStudy:
    sets = feature_sets(table, notes)
    numeric = {c: transform(table, c) for c in BASE_NUMERIC}
    numeric |= {c: transform(table, c) for fs in sets for c in fs.columns}
    categorical = {c: table[c].cast(pl.String).fill_null("-").to_numpy() for c in BASE_CATEGORICAL}
    theory = theory_summary(table)
    heldout, improvements, permutation = {}, {}, {}
    for scheme, col in SCHEMES.items():
        if table[col].n_unique() < 2:
            continue
        heldout[scheme], permutation[scheme] = _heldout(
            table, sets, numeric, categorical, col, settings=settings, sigma=sigma
        )
        improvements[scheme] = improvement(heldout[scheme])
    return FeatureStudy(
        sets=[FeatureSetColumns(name=fs.name, columns=list(fs.columns)) for fs in sets],
        heldout=heldout,
        improvement=improvements,
        permutation=permutation,
        theory=theory,
    )


def _heldout(
    table, sets, numeric, categorical, col, *, settings: Settings, sigma: float
) -> tuple[HeldOut[dict[str, Score]], dict[str, list[Importance]]]:
    y, delta = table["y_shift"].to_numpy(), table["delta"].to_numpy()
    groups = table[col].to_numpy()
    pred = {lr: {fs.name: np.full(len(y), np.nan) for fs in sets} for lr in LEARNERS}
    perm = {lr: {} for lr in LEARNERS}
    rng = np.random.default_rng(settings.seed)
    for g in np.unique(groups):
        test = groups == g
        train = ~test
        for fs in sets:
            cols = {c: numeric[c] for c in ((*BASE_NUMERIC, *fs.columns) if fs.base else fs.columns)}
            x, blocks = design(cols, categorical if fs.base else {}, train)
            for lr in LEARNERS:
                model = learner(lr, settings).fit(x[train], y[train])
                pred[lr][fs.name][test] = model.predict(x[test])
                if fs.name == "all":
                    _permute(
                        model,
                        x[test],
                        y[test],
                        delta[test],
                        blocks,
                        perm[lr],
                        str(g),
                        rng=rng,
                        repeats=settings.permutation_repeats,
                        sigma=sigma,
                    )
    ranking = {lr: _ranking(perm[lr]) for lr in LEARNERS} if any(fs.name == "all" for fs in sets) else {}
    return scores(delta, y, pred, groups, sigma=sigma), ranking


def _permute(model, x, y, delta, blocks, into: dict, fold: str, *, rng, repeats: int, sigma: float):
    ref = mdae_pair(delta, y, model.predict(x), sigma=sigma)
    for name, idx in blocks.items():
        rises = []
        for _ in range(repeats):
            xp = x.copy()
            xp[:, idx] = x[rng.permutation(len(x))][:, idx]
            got = mdae_pair(delta, y, model.predict(xp), sigma=sigma)
            rises.append((got.mdae_ln - ref.mdae_ln, got.mdae_delta - ref.mdae_delta))
        into.setdefault(name, []).append((fold, len(x), *np.mean(rises, axis=0)))


def _ranking(perm: dict) -> list[Importance]:
    rows = []
    for name, folds in perm.items():
        w = np.array([f[1] for f in folds], dtype=float)
        rows.append(
            Importance(
                block=name,
                rise_mdae_ln=float(np.average([f[2] for f in folds], weights=w)),
                rise_mdae_delta=float(np.average([f[3] for f in folds], weights=w)),
                per_fold_ln={f[0]: float(f[2]) for f in folds},
            )
        )
    return sorted(rows, key=lambda r: -r.rise_mdae_ln)


def _rel(base, other):
    return None if base is None or other is None or base == 0 else (base - other) / base


def improvement(res: HeldOut[dict[str, Score]]) -> dict[str, list[Improvement]]:
    """Relative MdAE improvement of each set over 'base' ((base - set) / base), overall and per fold."""
    out = {}
    for lr in LEARNERS:
        rows = []
        for name, overall in res.overall.scores[lr].items():
            base = res.overall.scores[lr]["base"]
            folds = [
                FoldImprovement(
                    fold=f.fold,
                    rel_delta=_rel(f.scores[lr]["base"].mdae_delta, f.scores[lr][name].mdae_delta),
                    rel_ln=_rel(f.scores[lr]["base"].mdae_ln, f.scores[lr][name].mdae_ln),
                )
                for f in res.folds
            ]
            rows.append(
                Improvement(
                    set=name,
                    score=overall,
                    rel_delta=_rel(base.mdae_delta, overall.mdae_delta),
                    rel_ln=_rel(base.mdae_ln, overall.mdae_ln),
                    folds_better_ln=sum(1 for f in folds if (f.rel_ln or 0) > 0),
                    folds=folds,
                )
            )
        out[lr] = rows
    return out


def theory_summary(table: pl.DataFrame) -> Theory:
    """How the zero-parameter predictor 1/2 tr(H) 10^(-SQNR/10) tracks delta: Spearman rho
    overall and within each nominal bit width, and, on clear rows, the log-log slope (1 if
    the second-order argument holds) and median delta / theory (the missing mean w^2)."""
    from scipy.stats import spearmanr

    t = table.filter(pl.col("theory").is_not_null())
    if t.height < 5:
        return Theory(rows=t.height)
    within = []
    for bits in sorted(set(t["w_bits"].to_list())):
        sub = t.filter(pl.col("w_bits") == bits)
        if sub.height >= 5 and sub["theory"].n_unique() > 1:
            within.append(
                BitsRho(w_bits=bits, rows=sub.height, rho=float(spearmanr(sub["theory"], sub["delta"]).statistic))
            )
    out = Theory(
        rows=t.height, spearman=float(spearmanr(t["theory"], t["delta"]).statistic), spearman_within_bits=within
    )
    c = t.filter(pl.col("clear"))
    if c.height >= 5 and c["theory"].n_unique() > 1:
        lx, ly = np.log(c["theory"].to_numpy()), c["y_clear"].to_numpy()
        slope, intercept = np.polyfit(lx, ly, 1)
        out = dataclasses.replace(
            out,
            slope_clear=float(slope),
            intercept_clear=float(intercept),
            median_ratio_clear=float(np.median(np.exp(ly - lx))),
        )
    return out
