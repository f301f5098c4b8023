"""``qbayes.fit`` and ``qbayes.fit_accuracy``: fit a model to databases and get the fit
object back, the work behind ``qbayes fit`` (which adds the in-sample check, the
convergence verdict and saving) and ``qbayes fit-accuracy`` (which saves it thinned)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qbayes import resources
from qbayes.api import checks
from qbayes.api.frames import as_polars
from qbayes.db.store import load_paths
from qbayes.errors import QBayesError
from qbayes.model import conditioning, fitfile
from qbayes.model.accuracy import rows as accuracy_rows
from qbayes.model.accuracy.fit import AccuracyFitOptions, fit_rows
from qbayes.model.accuracy.fitfile import AccuracyFit
from qbayes.model.fit import FitOptions, fit_database
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig
from qbayes.model.spec import DEFAULT_MODEL, ModelSpec, load_spec
from qbayes.model.tasks import load as load_tasks

DEFAULTS = SampleConfig()  # one source for the sampling defaults


def model_spec(model: str = DEFAULT_MODEL, rows: str | None = None) -> ModelSpec:
    """The spec ``model`` (a name under models/ or a TOML path), fitted to ``rows``
    ("published", "collected" or "all"; default: the spec's own, and its hash changes otherwise)."""
    spec = load_spec(model)
    return spec if rows is None else dataclasses.replace(spec, rows=rows)


def fit(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    model: str = DEFAULT_MODEL,
    rows: str | None = None,
    exclude_families: Sequence[str] = (),
    include_suspect: bool = False,
    observed: Any = None,
    draws: int = DEFAULTS.draws,
    tune: int = DEFAULTS.tune,
    chains: int = DEFAULTS.chains,
    extensions: int = DEFAULTS.extensions,
    seed: int = DEFAULTS.seed,
    sampler: str = DEFAULT_SAMPLER,
    target_accept: float = DEFAULTS.target_accept,
    progress: bool = False,
) -> Fit:
    """Fit the model spec ``model`` to the database directory (or directories) ``data``,
    default the shipped database, as ``qbayes fit`` does; MCMC, minutes at the defaults.

    ``observed``: a polars or pandas DataFrame of rows you measured (query layout plus
    ``ppl``), fitted too as source 'observed'. ``extensions``: at most this many rounds of
    ``chains`` fresh chains added while R-hat or ESS fall short of the bar. Returns the fit: ``fit.idata`` is the
    ArviZ DataTree (posterior of Δ's parameters, Δ in nats per token), ``fit.info`` says
    how it was made (``fit.info.convergence.ok``). ``qbayes.model.fitfile.save(fit, path)``
    writes it for ``qbayes.load(path)`` and ``--fit``.

    Examples:
        >>> import qbayes
        >>> f = qbayes.fit(draws=300, tune=300, chains=2)  # doctest: +SKIP
        >>> f.info.convergence.ok  # doctest: +SKIP
        True
    """
    paths = checks.paths("data", data)
    checks.flag("include_suspect", include_suspect)
    sample = checks.sample_config(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept,
        progress=progress,
        extensions=extensions,
    )
    extra = None
    if observed is not None:
        extra = conditioning.observed_rows(as_polars(observed, "observed"), "observed").training_rows()
    return fit_database(
        load_paths(paths),
        model_spec(model, rows),
        FitOptions(
            sampler=sampler,
            sample=sample,
            exclude_families=checks.names("exclude_families", exclude_families),
            include_suspect=include_suspect,
        ),
        extra=extra,
    )


def shipped_relative(path: str | os.PathLike) -> str:
    """A perplexity fit's path as an accuracy fit records it: ``data/NAME`` for the shipped one."""
    p = Path(path).resolve()
    shipped = resources.shipped_fit()
    return f"data/{p.name}" if shipped is not None and p == shipped.resolve() else str(path)


def fit_accuracy(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    fit: str | os.PathLike | None = None,
    exclude_families: Sequence[str] = (),
    include_suspect: bool = False,
    draws: int = 1500,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 20261207,
    sampler: str = DEFAULT_SAMPLER,
    target_accept: float = 0.98,
    progress: bool = False,
) -> AccuracyFit:
    """Fit task accuracy (percent) given the degradation Δ (nats per token) to the accuracy
    rows of the databases ``data`` (default: the shipped one), as ``qbayes fit-accuracy``
    does (docs/accuracy.md); MCMC, minutes at the defaults.

    Each configuration's Δ comes from the perplexity fit at ``fit`` (default: the shipped
    one) or from the perplexities its source prints. Returns the accuracy fit:
    ``.posterior`` holds its draws, ``.info.convergence`` how they converged;
    ``qbayes.model.accuracy.fitfile.save(fitfile.thin(f, draws=1000), path)`` writes it for
    ``qbayes.load(accuracy_path=path)``.

    Examples:
        >>> acc = qbayes.fit_accuracy(draws=200, tune=200, chains=2)  # doctest: +SKIP
        >>> acc.info.convergence.line()  # doctest: +SKIP
    """
    sample = checks.sample_config(
        draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept, progress=progress, min_steps=50
    )
    excluded = checks.names("exclude_families", exclude_families)
    checks.flag("include_suspect", include_suspect)
    ppl_path = resources.shipped_fit() if fit is None else checks.path("fit", fit)
    if ppl_path is None:
        raise QBayesError(
            "no perplexity fit given and this qbayes ships none (data/default-fit.nc); "
            "make one with `qbayes fit` and pass it as fit="
        )
    ppl_fit = fitfile.load(ppl_path)
    db = load_paths(checks.paths("data", data))
    tasks = load_tasks()
    rows = accuracy_rows.build(
        db, tasks, Predictor(ppl_fit, seed=sample.seed), exclude_families=excluded, include_suspect=include_suspect
    )
    opts = AccuracyFitOptions(sampler=sampler, sample=sample, exclude_families=excluded)
    return fit_rows(rows, tasks, ppl_fit, shipped_relative(ppl_path), opts)
