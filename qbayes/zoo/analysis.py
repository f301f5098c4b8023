"""Zoo analysis: does degradation grow with D/N at fixed bits (arXiv 2411.04330), and which
landscape/outlier features carry information beyond size and bits (arXiv 2410.12119)?

Everything is measured by held-out prediction: leave one architecture (family) out and
leave one size out. Pure numpy/polars/scikit-learn.

Target and noise. ``delta`` is a paired difference on a fixed text, so it is not exactly
zero for harmless formats: its noise shows as negative deltas, which no real degradation
produces. The noise scale is estimated from them, ``sigma = 1.4826 * median(-delta | delta
< 0)`` (a half-normal's scale; 1 % of the median positive delta when there are fewer than 5
negatives). Two targets follow:

* *clear rows* (``delta > clear_k * sigma``), regressed as ln(delta): the scaling-law form
  delta = C_fmt D^gamma_D / N^gamma_N is only identifiable where delta is measured, and
  near the floor ln(delta) is noise. Selecting on delta truncates small values, which biases
  slopes towards 0 at high bits, so the same fit is also reported on
* *all rows* as ln(max(delta, 0) + sigma): no selection, but compressed near the floor.

The held-out comparisons use the shifted target on all rows (every row must be predicted);
predicted delta = exp(prediction) - sigma. MdAE = median absolute error.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl

from qbayes.db.database import Database
from qbayes.zoo.analysis_features import feature_study
from qbayes.zoo.analysis_heldout import SCHEMES, onehot, scores
from qbayes.zoo.analysis_result import (
    BitsGamma,
    CheckpointCount,
    Coverage,
    DnStudy,
    FormatGamma,
    Gamma,
    HeldOut,
    Noise,
    Score,
    Settings,
    ZooAnalysis,
)
from qbayes.zoo.analysis_table import feature_columns, zoo_table

DEFAULT_SETTINGS = Settings()


def analyze(db: Database, *, settings: Settings = DEFAULT_SETTINGS) -> tuple[ZooAnalysis, pl.DataFrame]:
    """Run both studies on the zoo rows of ``db``; returns the results and the table."""
    table = zoo_table(db)
    return analyze_table(table, settings=settings), table


def analyze_table(table: pl.DataFrame, *, settings: Settings = DEFAULT_SETTINGS) -> ZooAnalysis:
    notes: list[str] = []
    sigma = noise_floor(table["delta"].to_numpy())
    table = add_targets(table, sigma=sigma, clear_k=settings.clear_k)
    data = coverage(table)
    for scheme, col in SCHEMES.items():
        if table[col].n_unique() < 2:
            notes.append(
                f"leave-one-{scheme}-out needs two or more levels of '{col}'; found {table[col].n_unique()}: skipped"
            )
    noise = Noise(
        sigma=sigma,
        clear_k=settings.clear_k,
        threshold=settings.clear_k * sigma,
        n_clear=int(table["clear"].sum()),
        n_negative=int((table["delta"] < 0).sum()),
    )
    dn = dn_study(table, settings=settings, sigma=sigma, notes=notes)
    feats = feature_study(table, settings=settings, sigma=sigma, notes=notes)
    return ZooAnalysis(settings=settings, data=data, noise=noise, dn=dn, features=feats, notes=notes)


def noise_floor(delta: np.ndarray) -> float:
    """Scale of the measurement noise of delta, from the negative deltas (see module doc)."""
    delta = delta[np.isfinite(delta)]
    neg = -delta[delta < 0]
    if neg.size >= 5:
        return float(1.4826 * np.median(neg))
    pos = delta[delta > 0]
    return float(0.01 * np.median(pos)) if pos.size else 1e-6


def add_targets(table: pl.DataFrame, *, sigma: float, clear_k: float) -> pl.DataFrame:
    return table.with_columns(
        (pl.col("delta").clip(lower_bound=0.0) + sigma).log().alias("y_shift"),
        (pl.col("delta") > clear_k * sigma).alias("clear"),
    ).with_columns(pl.when(pl.col("clear")).then(pl.col("delta").log()).alias("y_clear"))


def coverage(table: pl.DataFrame) -> Coverage:
    grid = table.group_by("family", "size").agg(pl.col("model").n_unique().alias("checkpoints")).sort("family", "size")
    return Coverage(
        rows=table.height,
        models=table["model"].n_unique(),
        families=sorted(set(table["family"])),
        sizes=sorted(set(table["size"])),
        formats=sorted(set(table["fmt"])),
        eval_sets=sorted(set(table["eval_set"])),
        checkpoints=[CheckpointCount(**row) for row in grid.to_dicts()],
        dn_range=(math.exp(table["log_dn"].min()), math.exp(table["log_dn"].max())),
        features_present=[c for c in feature_columns(table) if table[c].null_count() < table.height],
    )


# --- D/N study ----------------------------------------------------------------------


def effects(values, levels) -> np.ndarray:
    """Sum-to-zero coding: K levels -> K-1 columns, the last level all -1, an unseen level all 0
    (so a held-out family is predicted at the average family effect)."""
    levels = list(levels)
    if len(levels) < 2:
        return np.zeros((len(values), 0))
    x = onehot(values, levels)
    return x[:, :-1] - x[:, -1:]


def _cells(df: pl.DataFrame) -> np.ndarray:
    return (df["config"] + "|" + df["eval_set"]).to_numpy()


def gamma_arrays(df: pl.DataFrame) -> dict[str, np.ndarray]:
    """What :func:`gamma_fit` needs, as arrays (cells and families as integer codes)."""
    return {
        "cell": np.unique(_cells(df), return_inverse=True)[1],
        "fam": np.unique(df["family"].to_numpy(), return_inverse=True)[1],
        "log_d": df["log_d"].to_numpy(),
        "log_n": df["log_n"].to_numpy(),
    }


def _codes_onehot(codes: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(codes, return_inverse=True)
    return np.eye(inverse.max() + 1)[inverse]


def gamma_fit(
    a: dict[str, np.ndarray], y: np.ndarray, *, with_n: bool | None = None
) -> tuple[float, float | None] | None:
    """(gamma_D, gamma_N) of ln delta = a[config, eval_set] + b[family] + gamma_D ln D - gamma_N ln N.
    The family effect (sum-to-zero) keeps architecture differences out of gamma_N (families
    differ slightly in N at each size). Where N is not identified (one size, in a partial zoo)
    gamma_N is None and gamma_D is the slope within sizes; None when gamma_D is not identified
    either. ``with_n`` forces one form (bootstrap draws keep the form of the point estimate)."""
    if np.unique(a["log_d"]).size < 2:
        return None
    fam = _codes_onehot(a["fam"])
    base = np.column_stack([_codes_onehot(a["cell"]), fam[:, :-1] - fam[:, -1:], a["log_d"]])
    for n_term in (True, False) if with_n is None else (with_n,):
        if n_term and np.unique(a["log_n"]).size < 2:
            continue
        x = np.column_stack([base, a["log_n"]]) if n_term else base
        if x.shape[0] <= x.shape[1]:
            continue
        beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        if rank == x.shape[1]:
            return (float(beta[-2]), float(-beta[-1])) if n_term else (float(beta[-1]), None)
    return None


def _interval(draws: np.ndarray, q: float) -> float | None:
    draws = draws[np.isfinite(draws)]
    return float(np.quantile(draws, q)) if draws.size >= 10 else None


def gamma_with_ci(df: pl.DataFrame, target: str, *, settings: Settings, seed_offset: int = 0) -> Gamma:
    """Point estimates and model-bootstrap percentile intervals of gamma_D and gamma_N
    (intervals only from 5 checkpoints and 10 identified draws up)."""
    df = df.filter(pl.col(target).is_not_null())
    out = Gamma(n_rows=df.height, n_models=df["model"].n_unique())
    y, arrays = df[target].to_numpy(), gamma_arrays(df)
    point = gamma_fit(arrays, y) if df.height >= settings.min_rows else None
    if point is None:
        return out
    out = dataclasses.replace(out, gamma_d=point[0], gamma_n=point[1])
    models = df["model"].to_numpy()
    index = {m: np.flatnonzero(models == m) for m in np.unique(models)}
    names = list(index)
    if len(names) < 5:
        return out
    rng = np.random.default_rng(settings.seed + seed_offset)
    draws = []
    for _ in range(settings.bootstrap):
        rows = np.concatenate([index[m] for m in rng.choice(names, size=len(names))])
        fit = gamma_fit({k: v[rows] for k, v in arrays.items()}, y[rows], with_n=point[1] is not None)
        if fit is not None:
            draws.append(fit)
    if draws:
        arr = np.asarray(draws, dtype=float)  # gamma_N None -> NaN
        q = (1 - settings.ci) / 2
        out = dataclasses.replace(
            out,
            gamma_d_lo=_interval(arr[:, 0], q),
            gamma_d_hi=_interval(arr[:, 0], 1 - q),
            gamma_n_lo=_interval(arr[:, 1], q),
            gamma_n_hi=_interval(arr[:, 1], 1 - q),
            n_boot=len(draws),
        )
    return out


def dn_study(table: pl.DataFrame, *, settings: Settings, sigma: float, notes: list[str]) -> DnStudy:
    pooled = {t: gamma_with_ci(table, f"y_{t}", settings=settings) for t in ("clear", "shift")}
    if pooled["clear"].gamma_d is None:
        notes.append("D/N: too few clear rows or too few distinct sizes/budgets for the pooled fit")
    per_bits = []
    for i, bits in enumerate(sorted(set(table["w_bits"].to_list()))):
        sub = table.filter(pl.col("w_bits") == bits)
        per_bits.append(
            BitsGamma(
                w_bits=bits,
                frac_clear=float(sub["clear"].mean()),
                clear=gamma_with_ci(sub, "y_clear", settings=settings, seed_offset=100 + i),
                shift=gamma_with_ci(sub, "y_shift", settings=settings, seed_offset=200 + i),
            )
        )
    per_format = []
    for i, fmt in enumerate(sorted(set(table["fmt"].to_list()))):
        sub = table.filter(pl.col("fmt") == fmt)
        fit = gamma_with_ci(sub, "y_clear", settings=settings, seed_offset=1000 + i)
        per_format.append(
            FormatGamma(
                fmt=fmt,
                w_bits=float(sub["w_bits"][0]),
                bits=float(sub["bits"].mean()),
                rows=sub.height,
                frac_clear=float(sub["clear"].mean()),
                median_delta=float(sub["delta"].median()),
                fit=fit,
            )
        )
    return DnStudy(
        pooled=pooled,
        per_bits=per_bits,
        per_format=per_format,
        heldout={
            scheme: dn_heldout(table, col, sigma=sigma) for scheme, col in SCHEMES.items() if table[col].n_unique() >= 2
        },
    )


DN_MODELS = ("without_ln_d", "with_ln_d", "with_ln_d_by_bits")


def _dn_design(df: pl.DataFrame, model: str, cell_levels, bits_levels, family_levels) -> np.ndarray:
    cols = [
        onehot(_cells(df), cell_levels),
        effects(df["family"].to_numpy(), family_levels),
        df["log_n"].to_numpy()[:, None],
    ]
    if model == "with_ln_d":
        cols.append(df["log_d"].to_numpy()[:, None])
    elif model == "with_ln_d_by_bits":
        cols.append(onehot(df["w_bits"].to_numpy(), bits_levels) * df["log_d"].to_numpy()[:, None])
    return np.hstack(cols)


def dn_heldout(table: pl.DataFrame, group_col: str, *, sigma: float) -> HeldOut[Score]:
    """Leave one level of ``group_col`` out: least squares on the shifted target with and
    without the ln D term (and with one ln D slope per bit width). Covariates as in
    :func:`gamma_fit`; a held-out family gets the average family effect, and a slope the
    training fold cannot identify (one size left, in a partial zoo) is left out. Rows of a
    (configuration, text) the training fold lacks (e.g. GPTQ on an architecture that has none)
    are not predicted; ``n_predicted`` counts the rest."""
    row_cells = _cells(table)
    cells = sorted(set(row_cells.tolist()))
    n_cells = len(cells)
    bits = sorted(set(table["w_bits"].to_list()))
    groups = table[group_col].to_numpy()
    pred = {m: np.full(table.height, np.nan) for m in DN_MODELS}
    y = table["y_shift"].to_numpy()
    for g in np.unique(groups):
        test = groups == g
        families = sorted(set(table.filter(pl.Series(~test))["family"].to_list()))
        seen = np.isin(row_cells, row_cells[~test])  # a configuration the fold never saw has no intercept
        for m in DN_MODELS:
            x = _dn_design(table, m, cells, bits, families)
            flat = np.flatnonzero(np.ptp(x[~test], axis=0) == 0)
            x[:, flat[flat >= n_cells]] = 0.0  # a slope the training fold cannot identify is left out
            beta = np.linalg.lstsq(x[~test], y[~test], rcond=None)[0]
            pred[m][test] = np.where(seen[test], x[test] @ beta, np.nan)
    return scores(table["delta"].to_numpy(), y, pred, groups, sigma=sigma)
