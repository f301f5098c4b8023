"""Measured features as model covariates: which database values a spec may use, and how
they become standardised columns of the design.

Published rows have no features; rows collected here (the zoo) do. A spec lists the
covariates it uses (``features = ["log_nsr", ...]``); :func:`attach_raw` joins the raw
values to the training table (null where unmeasured) and :func:`standardise` turns them
into z-scores with the training rows' mean and sd (stored in the fit's encoding). A row
without a measured value gets 0, the training average, so a feature shifts only the rows
that have it and leaves the others at the population mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.errors import unknown


@dataclass(frozen=True)
class Covariate:
    raw: str  # column of the training table / prediction query holding the raw value
    doc: str

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.raw == "sqnr_db":  # SQNR in dB -> ln(noise power / signal power)
            return -x * math.log(10.0) / 10.0
        if self.raw in ("act_outlier_frac", "radial_loss"):  # may be 0 (or, within noise, negative)
            return x
        return np.log(np.maximum(x, 1e-12))


COVARIATES = {
    "log_nsr": Covariate("sqnr_db", "ln noise-to-signal power of the quantized weights (-SQNR ln10/10)"),
    "log_hessian_trace": Covariate("hessian_trace", "ln Hutchinson trace of the loss Hessian (whole model)"),
    "log_sharpness": Covariate("hessian_top_eig", "ln top Hessian eigenvalue (power iteration)"),
    "radial_loss": Covariate("radial_loss", "loss increase under a random relative weight perturbation of radius "
                                            "0.1 (sharpness along random directions; smaller radii are at noise level "
                                            "for the zoo)"),
    "act_outlier_frac": Covariate("act_outlier_frac", "fraction of outlier activation channels, mean over "
                                                      "calibration texts"),
    "log_weight_kurtosis": Covariate("weight_kurtosis", "ln kurtosis of the weights (whole model)"),
}
RAW_COLUMNS = tuple(dict.fromkeys(c.raw for c in COVARIATES.values()))
MODEL_FEATURES = tuple(c for c in RAW_COLUMNS if c != "sqnr_db")  # per-model values from the features table
RADIAL_RADIUS = 0.1


def check_names(names, where: str) -> None:
    for n in names:
        if n not in COVARIATES:
            raise unknown(f"feature in {where}", n, COVARIATES)


def model_features(features: pl.DataFrame) -> pl.DataFrame:
    """One row per model with the whole-model features (means over evaluation and
    calibration texts); radial loss at :data:`RADIAL_RADIUS`."""
    f = features.filter((pl.col("scope") == "model") & pl.col("feature").is_in(list(MODEL_FEATURES)))
    f = f.filter((pl.col("feature") != "radial_loss") | ((pl.col("radius") - RADIAL_RADIUS).abs() < 1e-9))
    if f.height == 0:
        return pl.DataFrame(schema={"model": pl.String, **{c: pl.Float64 for c in MODEL_FEATURES}})
    wide = f.group_by("model", "feature").agg(pl.col("value").mean()).pivot(
        on="feature", index="model", values="value")
    for c in MODEL_FEATURES:
        if c not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    return wide.select("model", *[pl.col(c).cast(pl.Float64) for c in MODEL_FEATURES])


def attach_raw(df: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """``df`` (with a ``model`` column, and ``sqnr_db`` where known) plus the per-model raw
    feature columns, null where a model has none."""
    return df.join(model_features(features), on="model", how="left", maintain_order="left")


def raw_values(df: pl.DataFrame, name: str) -> np.ndarray:
    """Transformed raw values of covariate ``name``; NaN where unmeasured."""
    cov = COVARIATES[name]
    if cov.raw not in df.columns:
        return np.full(df.height, np.nan)
    x = df.get_column(cov.raw).cast(pl.Float64).to_numpy().astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(x), np.nan, cov.transform(np.nan_to_num(x, nan=1.0)))


def scales(df: pl.DataFrame, names) -> dict[str, tuple[float, float]]:
    """(mean, sd) of each transformed covariate over the rows that have it."""
    out = {}
    for n in names:
        x = raw_values(df, n)
        x = x[np.isfinite(x)]
        if x.size == 0:
            out[n] = (0.0, 1.0)
        else:
            sd = float(x.std())
            out[n] = (float(x.mean()), sd if sd > 0 else 1.0)
    return out


def standardise(df: pl.DataFrame, scale: dict[str, tuple[float, float]]) -> np.ndarray:
    """(N, F) z-scores in the order of ``scale``; 0 where a value is missing."""
    cols = []
    for n, (mean, sd) in scale.items():
        z = (raw_values(df, n) - mean) / sd
        cols.append(np.where(np.isfinite(z), z, 0.0))
    return np.column_stack(cols) if cols else np.zeros((df.height, 0))
