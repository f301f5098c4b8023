"""The feature steps of a run, and their rows in the ``features`` table.

* ``features/weights``: weight kurtosis and max/std, per layer and for the model;
* ``features/outliers/CALIB``: activation statistics under one calibration text
  (:mod:`qbayes.collect.outliers`), per layer and for the model;
* ``features/landscape/EVAL``: Hessian trace (model and per layer, with standard errors),
  top Hessian eigenvalue and radial loss per radius (:mod:`qbayes.collect.landscape`).

Per-layer SQNR of each quantized configuration is written as feature ``sqnr_db`` when
the schema allows that name (its scope is ``METHOD/DTYPE_LABEL/CALIB:LAYER``, because the
features key has no configuration column); the overall SQNR always goes to
``results.sqnr_db``.
"""

from __future__ import annotations

import time
from typing import Protocol

import torch

from qbayes.collect.grid import Grid
from qbayes.collect.landscape import landscape
from qbayes.collect.methods.base import Quantized
from qbayes.collect.modelio import LoadedModel
from qbayes.collect.outliers import activation_stats, summarise_activations, summarise_weights, weight_stats
from qbayes.collect.plan import CollectOptions, Config, Step, stage
from qbayes.collect.provenance import Provenance
from qbayes.collect.shard import Shard
from qbayes.db.schema import FEATURES

MODEL_SCOPE = "model"
SQNR_FEATURE = "sqnr_db"


class Run(Protocol):
    """What the feature steps use of their collection run (a
    :class:`~qbayes.collect.runner.Collector`)."""

    opts: CollectOptions
    grid: Grid
    name: str
    shard: Shard
    loaded: LoadedModel | None
    prov: Provenance

    def windows(self, purpose: str, name: str) -> torch.Tensor: ...


class FeatureSteps:
    def __init__(self, collector: Run):
        self.c = collector
        self.settings = collector.grid.features

    def steps(self) -> list[Step]:
        c, name = self.c, self.c.name
        out = [
            Step(
                "features/weights",
                "feature",
                lambda: c.shard.has_feature(
                    model=name, feature="weight_kurtosis", scope=MODEL_SCOPE, calib_set=None, eval_set=None, radius=None
                ),
                self.weights,
            )
        ]
        if self.settings.outliers:
            for calib in self.settings.outlier_calib:
                out.append(
                    Step(
                        f"features/outliers/{calib}",
                        "feature",
                        lambda calib=calib: c.shard.has_feature(
                            model=name,
                            feature="act_kurtosis",
                            scope=MODEL_SCOPE,
                            calib_set=calib,
                            eval_set=None,
                            radius=None,
                        ),
                        lambda calib=calib: self.outliers(calib),
                    )
                )
        if self.settings.landscape:
            for eval_set in self.settings.landscape_eval:
                out.append(
                    Step(
                        f"features/landscape/{eval_set}",
                        "feature",
                        lambda e=eval_set: c.shard.has_feature(
                            model=name,
                            feature="hessian_trace",
                            scope=MODEL_SCOPE,
                            calib_set=None,
                            eval_set=e,
                            radius=None,
                        ),
                        lambda e=eval_set: self.landscape(e),
                    )
                )
        return out

    # --- the steps ------------------------------------------------------------------

    def weights(self) -> str:
        t0 = time.perf_counter()
        per_layer = weight_stats(self.c.loaded.layers())
        summary = summarise_weights(per_layer)
        wall = time.perf_counter() - t0
        rows = []
        for scope, s in [(MODEL_SCOPE, summary), *per_layer.items()]:
            rows.append(self.row("weight_kurtosis", scope, s.kurtosis, wall_s=wall))
            rows.append(self.row("weight_max_over_std", scope, s.max_over_std, wall_s=wall))
        self.c.shard.add_features(rows)
        return f"kurtosis {summary.kurtosis:.2f}, max/std {summary.max_over_std:.1f}"

    def outliers(self, calib: str) -> str:
        with stage("calibration"):
            windows = self.c.windows("outliers", calib)
        t0 = time.perf_counter()
        per_layer = activation_stats(
            self.c.loaded.model,
            self.c.loaded.layers(),
            windows,
            self.c.grid.eval.batch_size,
            self.settings.outlier_threshold,
            self.c.opts.seed,
        )
        summary = summarise_activations(per_layer)
        wall = time.perf_counter() - t0
        rows = []
        for scope, s in [(MODEL_SCOPE, summary), *per_layer.items()]:
            for feature, value in (
                ("act_max_abs", s.max_abs),
                ("act_median_abs", s.median_abs),
                ("act_kurtosis", s.kurtosis),
                ("act_outlier_frac", s.outlier_frac),
            ):
                rows.append(self.row(feature, scope, value, calib_set=calib, wall_s=wall))
        self.c.shard.add_features(rows)
        return (
            f"max|a| {summary.max_abs:.2f}, kurtosis {summary.kurtosis:.1f}, "
            f"outlier channels {summary.outlier_frac:.3f}"
        )

    def landscape(self, eval_set: str) -> str:
        s = self.settings
        windows = self.c.windows("landscape", eval_set)
        res = landscape(
            self.c.loaded.model,
            self.c.loaded.layers(),
            windows,
            hutchinson_samples=s.hutchinson_samples,
            power_iters=s.power_iters,
            radii=s.radii,
            radial_directions=s.radial_directions,
            seed=self.c.opts.seed,
        )
        rows = [
            self.row(
                "hessian_trace",
                MODEL_SCOPE,
                res.trace.value,
                se=res.trace.se,
                eval_set=eval_set,
                wall_s=res.wall_s["hessian_trace"],
            )
        ]
        rows += [
            self.row(
                "hessian_trace", layer, est.value, se=est.se, eval_set=eval_set, wall_s=res.wall_s["hessian_trace"]
            )
            for layer, est in res.trace_per_layer.items()
        ]
        rows.append(
            self.row(
                "hessian_top_eig",
                MODEL_SCOPE,
                res.top_eig.value,
                eval_set=eval_set,
                wall_s=res.wall_s["hessian_top_eig"],
            )
        )
        rows += [
            self.row(
                "radial_loss",
                MODEL_SCOPE,
                est.value,
                se=est.se,
                eval_set=eval_set,
                radius=r,
                wall_s=res.wall_s["radial_loss"],
            )
            for r, est in res.radial.items()
        ]
        self.c.shard.add_features(rows)
        return (
            f"trace {res.trace.value:.3g} ± {res.trace.se or 0:.2g}, top eig {res.top_eig.value:.3g}, "
            f"times " + ", ".join(f"{k} {v:.1f} s" for k, v in res.wall_s.items())
        )

    # --- rows -----------------------------------------------------------------------

    def sqnr_rows(self, cfg: Config, q: Quantized) -> list[dict]:
        if SQNR_FEATURE not in FEATURES or not self.settings.per_layer_sqnr:
            return []
        prefix = f"{cfg.method.label}/{cfg.dtype_label}/{cfg.calib or '-'}"
        t0 = time.perf_counter()
        per_layer = q.sqnr.per_layer()
        wall = time.perf_counter() - t0
        return [
            self.row(SQNR_FEATURE, f"{prefix}:{layer}", value, calib_set=cfg.calib, wall_s=wall)
            for layer, value in per_layer.items()
        ]

    def row(
        self,
        feature: str,
        scope: str,
        value: float,
        *,
        se=None,
        calib_set=None,
        eval_set=None,
        radius=None,
        wall_s=None,
    ) -> dict:
        return {
            "model": self.c.name,
            "feature": feature,
            "scope": scope,
            "calib_set": calib_set,
            "eval_set": eval_set,
            "radius": radius,
            "value": float(value),
            "se": se,
            **self.c.prov.columns(wall_s),
        }
