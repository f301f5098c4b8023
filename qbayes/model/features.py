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

from qbayes.registry import Registry

TRANSFORMS = {
    "log": lambda x: np.log(np.maximum(x, 1e-12)),
    "identity": lambda x: x,  # for values that may be 0 (or, within noise, negative)
    "nsr": lambda x: -x * math.log(10.0) / 10.0,  # SQNR in dB -> ln(noise power / signal power)
}


@dataclass(frozen=True)
class Covariate:
    raw: str  # column of the training table / prediction query holding the raw value
    scale: str  # key of TRANSFORMS: how the raw value becomes the covariate
    doc: str

    def transform(self, x: np.ndarray) -> np.ndarray:
        return TRANSFORMS[self.scale](x)


# registration order is the order of RAW_COLUMNS and of the model-feature columns
COVARIATES: Registry[Covariate] = Registry("covariate")
for _name, _covariate in {
    "log_nsr": Covariate("sqnr_db", "nsr", "ln noise-to-signal power of the quantized weights (-SQNR ln10/10)"),
    "log_hessian_trace": Covariate("hessian_trace", "log", "ln Hutchinson trace of the loss Hessian (whole model)"),
    "log_sharpness": Covariate("hessian_top_eig", "log", "ln top Hessian eigenvalue (power iteration)"),
    "radial_loss": Covariate(
        "radial_loss",
        "identity",
        "loss increase under a random relative weight perturbation of radius "
        "0.1 (sharpness along random directions; smaller radii are at noise level "
        "for the zoo)",
    ),
    "act_outlier_frac": Covariate(
        "act_outlier_frac", "identity", "fraction of outlier activation channels, mean over calibration texts"
    ),
    "log_weight_kurtosis": Covariate("weight_kurtosis", "log", "ln kurtosis of the weights (whole model)"),
}.items():
    COVARIATES.register(_name, _covariate)
RAW_COLUMNS = tuple(dict.fromkeys(c.raw for c in COVARIATES.values()))
MODEL_FEATURES = tuple(c for c in RAW_COLUMNS if c != "sqnr_db")  # per-model values from the features table
RADIAL_RADIUS = 0.1
RADIAL_PREFIX = "radial_loss_r"  # per-model radial loss columns, one per radius


def check_names(names, where: str) -> None:
    for n in names:
        if n not in COVARIATES:
            raise COVARIATES.unknown(n, kind=f"feature in {where}")


def radial_column(radius: float) -> str:
    return f"{RADIAL_PREFIX}{radius:g}"


def per_model_features(features: pl.DataFrame, names) -> pl.DataFrame:
    """One row per model with whole-model (scope ``model``) features: each feature of
    ``names`` averaged over evaluation and calibration texts (null where unmeasured), and
    the radial loss as one column per radius (:func:`radial_column`)."""
    names = list(names)
    f = features.filter(
        (pl.col("scope") == "model")
        & (pl.col("feature").is_in(names) | ((pl.col("feature") == "radial_loss") & pl.col("radius").is_not_null()))
    )
    if f.height == 0:
        return pl.DataFrame(schema={"model": pl.String, **{c: pl.Float64 for c in names}})
    radii = sorted(set(f.filter(pl.col("feature") == "radial_loss")["radius"].to_list()))
    column = (
        pl.when(pl.col("feature") == "radial_loss")
        .then(
            pl.col("radius").replace_strict(
                radii, [radial_column(r) for r in radii], default=None, return_dtype=pl.String
            )
        )
        .otherwise(pl.col("feature"))
    )
    wide = (
        f.with_columns(column.alias("column"))
        .group_by("model", "column")
        .agg(pl.col("value").mean())
        .pivot(on="column", index="model", values="value")
    )
    missing = [pl.lit(None, dtype=pl.Float64).alias(c) for c in names if c not in wide.columns]
    return wide.with_columns(missing).with_columns(pl.exclude("model").cast(pl.Float64))


def model_features(features: pl.DataFrame) -> pl.DataFrame:
    """One row per model with the whole-model covariate values; radial loss at
    :data:`RADIAL_RADIUS`."""
    wide = per_model_features(features, [c for c in MODEL_FEATURES if c != "radial_loss"])
    radial = radial_column(RADIAL_RADIUS)
    radial = pl.col(radial) if radial in wide.columns else pl.lit(None, dtype=pl.Float64)
    return wide.with_columns(radial.alias("radial_loss")).select("model", *MODEL_FEATURES)


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


def standardise(df: pl.DataFrame, scale: dict[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) z-scores in the order of ``scale``, 0 where a value is missing, and the
    (N, F) mask of those missing values."""
    if not scale:
        return np.zeros((df.height, 0)), np.zeros((df.height, 0), dtype=bool)
    z = np.column_stack([(raw_values(df, n) - mean) / sd for n, (mean, sd) in scale.items()])
    missing = ~np.isfinite(z)
    return np.where(missing, 0.0, z), missing
