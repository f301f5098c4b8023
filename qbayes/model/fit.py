"""Fitting: database rows -> training table -> covariates -> PyMC graph -> posterior -> :class:`Fit`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import xarray as xr

from qbayes.db.database import Database
from qbayes.errors import QBayesError
from qbayes.model import diagnostics, known_families, packing, whiten
from qbayes.model.covariates import covariates
from qbayes.model.encoding import Encoding, family_tokens
from qbayes.model.fitfile import Fit, FitInfo, data_hash, package_versions
from qbayes.model.graph import build_model
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig, sample
from qbayes.model.spec import OPTIONAL_GROUPINGS, ModelSpec
from qbayes.model.table import training_table

MIN_ROWS = 10


@dataclass(frozen=True)
class FitOptions:
    sampler: str = DEFAULT_SAMPLER
    sample: SampleConfig = SampleConfig()
    exclude_families: tuple[str, ...] = ()
    include_suspect: bool = False


def prepare(df: pl.DataFrame, spec: ModelSpec) -> tuple[pl.DataFrame, Encoding]:
    """The training table as the model sees it (family tokens where the spec asks; vocabulary
    sizes only for a spec with a collapse regime, named formats only for a spec with format
    effects: the one use of each, so other fits keep their data hash) and its encoding."""
    if spec.tokens == "family":
        df = family_tokens(df)  # the fit keeps the covariates the model actually saw
    if spec.collapse is None and "vocab_size" in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("vocab_size"))
    unused = [g for g in OPTIONAL_GROUPINGS if g not in spec.effects]
    df = df.with_columns(pl.lit(None, dtype=pl.String).alias(g) for g in unused)
    return df, Encoding.from_table(
        df,
        spec.features,
        spec.within,
        spec.tokens_within,
        known_families.load(),
        groupings=spec.groupings,
        min_rows=spec.min_rows,
        min_families=spec.min_families,
    )


def fit_table(df: pl.DataFrame, spec: ModelSpec, opts: FitOptions = FitOptions()) -> Fit:
    """Fit ``spec`` to a training table (see :func:`training_table`)."""
    if df.height < MIN_ROWS:
        hint = (
            ""
            if spec.rows == "all"
            else (
                f" (model '{spec.name}' is for {spec.rows} rows only; a model "
                'for the other rows, or rows = "all", may be what you want)'
            )
        )
        raise QBayesError(f"only {df.height} quantized rows with baselines to fit; need at least {MIN_ROWS}{hint}")
    df, enc = prepare(df, spec)
    # a grouping whose levels need min_rows or min_families may have none in a small table:
    # every row then reads as an unseen level, as for an optional grouping
    may_be_empty = {*OPTIONAL_GROUPINGS, *spec.min_rows, *spec.min_families}
    empty = [g for g in spec.effects if not enc.levels[g] and g not in may_be_empty]
    if empty:
        # a grouping effect needs a level to sum to zero over (and to draw a new one around)
        hint = " (a model's design comes from the models table's norm and mlp)" if "arch" in empty[0] else ""
        raise QBayesError(
            f"model '{spec.name}' has {empty[0]} effects, but no training row has a level of it"
            f"{hint}; fill the data or drop '{empty[0]}' from the spec's [effects]"
        )
    covs = covariates(enc.read(df))
    model = build_model(spec, covs, enc, df.get_column("delta").to_numpy())
    pack = packing.plan(spec, enc)

    def named(tree: xr.DataTree) -> xr.DataTree:
        """The packed vector's draws as the named parameters (its whitened coordinates, which
        the named ones are a linear map of, are not kept)."""
        post = pack.expand(tree["posterior"].to_dataset(), lambda dims: list(model.coords[dims]))
        post = post.drop_vars([v for v in (whiten.WHITE, f"{whiten.WHITE}_dim_0") if v in post.variables])
        return xr.DataTree.from_dict({"posterior": post, "sample_stats": tree["sample_stats"].to_dataset()})

    checked: dict[int, diagnostics.Convergence] = {}

    def more(tree: xr.DataTree) -> bool:
        checked[tree["posterior"].sizes["chain"]] = conv = diagnostics.check(named(tree))
        return conv.more_draws_help

    result = sample(
        model,
        sampler=opts.sampler,
        config=opts.sample,
        more=more,
        keep=[v.name for v in model.free_RVs] + [packing.THETA],
    )
    tree = named(result.tree)
    conv = checked.get(tree["posterior"].sizes["chain"]) or diagnostics.check(tree)
    info = FitInfo(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sampler=opts.sampler,
        sample_config=opts.sample,
        exclude_families=tuple(opts.exclude_families),
        include_suspect=opts.include_suspect,
        compile_s=round(result.compile_s, 3),
        sample_s=round(result.sample_s, 3),
        convergence=conv,
        versions=package_versions(),
        command=" ".join(sys.argv),
        n_rows=df.height,
        data_hash=data_hash(df),
        rounds=result.rounds,
    )
    return Fit(spec=spec, encoding=enc, tree=tree, data=df, info=info)


def fit_database(
    db: Database, spec: ModelSpec, opts: FitOptions = FitOptions(), extra: pl.DataFrame | None = None
) -> Fit:
    """Fit ``spec`` to the database's rows, plus ``extra`` training rows (observed rows,
    conditioning.Observed.training_rows: the exact route the fast update approximates)."""
    df = training_table(
        db, exclude_families=opts.exclude_families, include_suspect=opts.include_suspect, rows=spec.rows
    )
    if extra is not None:
        df = pl.concat([df, extra.select(df.columns)], how="vertical_relaxed")
    return fit_table(df, spec, opts)


def prior_predictive(db: Database, spec: ModelSpec, *, draws: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """Prior predictive draws of delta for the training rows, and the observed deltas."""
    import pymc as pm

    df, enc = prepare(training_table(db, rows=spec.rows), spec)
    model = build_model(spec, covariates(enc.read(df)), enc, None)
    with model:
        idata = pm.sample_prior_predictive(draws=draws, random_seed=seed)
    # the likelihood is unobserved here, so PyMC puts its draws with the other free variables
    groups = [idata.prior_predictive, idata.prior]
    name = next(n for n in ("log_delta", "delta") if any(n in g for g in groups))
    sim = next(g for g in groups if name in g)[name].values.reshape(draws, -1)
    if name == "log_delta":
        sim = np.exp(sim) - spec.log_shift
    return {"simulated": sim, "observed": df.get_column("delta").to_numpy()}
