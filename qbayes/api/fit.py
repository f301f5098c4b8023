"""``qbayes.fit``: fit a model to databases and get the fit object back, the work behind
``qbayes fit`` (which adds the in-sample check, the convergence verdict and saving)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from qbayes.api.frames import as_polars
from qbayes.db.store import load_paths
from qbayes.model import conditioning
from qbayes.model.fit import FitOptions, fit_database
from qbayes.model.fitfile import Fit
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig
from qbayes.model.spec import DEFAULT_MODEL, ModelSpec, load_spec

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
    seed: int = DEFAULTS.seed,
    sampler: str = DEFAULT_SAMPLER,
    target_accept: float = DEFAULTS.target_accept,
    progress: bool = False,
) -> Fit:
    """Fit the model spec ``model`` to the database directory (or directories) ``data``,
    default the shipped database, as ``qbayes fit`` does; MCMC, minutes at the defaults.

    ``observed``: a polars or pandas DataFrame of rows you measured (query layout plus
    ``ppl``), fitted too as source 'observed'. Returns the fit: ``fit.idata`` is the
    ArviZ DataTree (posterior of Δ's parameters, Δ in nats per token), ``fit.info`` says
    how it was made (``fit.info.convergence.ok``). ``qbayes.model.fitfile.save(fit, path)``
    writes it for ``qbayes.load(path)`` and ``--fit``.

    Example:
        >>> import qbayes
        >>> f = qbayes.fit(draws=300, tune=300, chains=2)
        >>> f.info.convergence.line()
    """
    paths = [] if data is None else [data] if isinstance(data, (str, os.PathLike)) else list(data)
    extra = None
    if observed is not None:
        extra = conditioning.observed_rows(as_polars(observed, "observed"), "observed").training_rows()
    return fit_database(
        load_paths(paths),
        model_spec(model, rows),
        FitOptions(
            sampler=sampler,
            sample=SampleConfig(
                draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept, progress=progress
            ),
            exclude_families=tuple(exclude_families),
            include_suspect=include_suspect,
        ),
        extra=extra,
    )
