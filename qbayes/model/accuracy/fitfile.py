"""Saving and loading accuracy fits: one netCDF file (an xarray DataTree) holding the
posterior, the sampler statistics, the training rows and configurations, and a typed
record (:class:`AccuracyFitInfo`) of how the fit was made and which perplexity fit gave
its degradations.

The file is refused when it is not an accuracy fit, was written by a newer format, or its
posterior or rows do not match their checksums.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xarray as xr

from qbayes.errors import QBayesError
from qbayes.model.diagnostics import Convergence
from qbayes.model.fitstore import FileKind, read_fit_file, thinned, write_fit_file
from qbayes.model.samplers import SampleConfig

FORMAT = "qbayes-accuracy-fit"
FORMAT_VERSION = 1
KIND = FileKind(
    "accuracy fit", FORMAT, FORMAT_VERSION, ("posterior", "sample_stats", "rows", "configs"), "qbayes fit-accuracy"
)


@dataclass(frozen=True)
class PerplexityFitRef:
    """The perplexity fit whose posterior predictive gave the configurations' Δ priors."""

    path: str  # as given when fitting (the shipped one: data/default-fit.nc)
    model: str
    data_hash: str
    posterior_checksum: str
    created: str


@dataclass(frozen=True)
class AccuracyFitInfo:
    created: str
    sampler: str
    sample_config: SampleConfig
    convergence: Convergence
    versions: dict[str, str]
    command: str
    n_rows: int
    n_configs: int
    data_hash: str
    exclude_families: tuple[str, ...]
    tasks: tuple[str, ...]  # the posterior's task axis, in order
    shift: float  # Δ priors are on ln(Δ + shift)
    ppl_fit: PerplexityFitRef
    compile_s: float
    sample_s: float

    def to_attrs(self) -> dict[str, str | int | float]:
        out: dict[str, str | int | float] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v = json.dumps(dataclasses.asdict(v))
            elif isinstance(v, (tuple, dict)):
                v = json.dumps(list(v) if isinstance(v, tuple) else v)
            out[f.name] = v
        return out

    @classmethod
    def from_attrs(cls, a: dict) -> AccuracyFitInfo:
        def obj(name):
            return json.loads(a[name])

        return cls(
            created=str(a["created"]),
            sampler=str(a["sampler"]),
            sample_config=SampleConfig(**obj("sample_config")),
            convergence=Convergence(**obj("convergence")),
            versions=dict(obj("versions")),
            command=str(a["command"]),
            n_rows=int(a["n_rows"]),
            n_configs=int(a["n_configs"]),
            data_hash=str(a["data_hash"]),
            exclude_families=tuple(obj("exclude_families")),
            tasks=tuple(obj("tasks")),
            shift=float(a["shift"]),
            ppl_fit=PerplexityFitRef(**obj("ppl_fit")),
            compile_s=float(a["compile_s"]),
            sample_s=float(a["sample_s"]),
        )


@dataclass
class AccuracyFit:
    """A fitted accuracy model: posterior (``tree``), the training rows and configurations
    it saw, and how it was made (``info``)."""

    tree: xr.DataTree
    rows: pl.DataFrame
    configs: pl.DataFrame
    info: AccuracyFitInfo

    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()


def table_hash(*tables: pl.DataFrame) -> str:
    h = hashlib.sha256()
    for df in tables:
        h.update(df.write_csv().encode())
    return h.hexdigest()[:16]


def _to_dataset(df: pl.DataFrame) -> xr.Dataset:
    out = {}
    for name, dtype in df.schema.items():
        s = df.get_column(name)
        if dtype == pl.String:
            out[name] = ("row", s.fill_null("").to_numpy().astype(str))
        else:
            out[name] = ("row", s.cast(pl.Float64).to_numpy())
    return xr.Dataset(out, attrs={"dtypes": json.dumps({c: str(t) for c, t in df.schema.items()})})


def _from_dataset(ds: xr.Dataset) -> pl.DataFrame:
    dtypes = json.loads(ds.attrs["dtypes"])
    cols = []
    for name, dtype in dtypes.items():
        values = ds[name].values
        if dtype == "String":
            cols.append(pl.Series(name, values.astype(str)).replace("", None))
        else:
            s = pl.Series(name, values.astype(np.float64)).fill_nan(None)
            cols.append(s.cast(pl.Int64) if dtype == "Int64" else s)
    return pl.DataFrame(cols)


def thin(fit: AccuracyFit, *, draws: int, seed: int = 0) -> AccuracyFit:
    """A copy keeping ``draws`` posterior draws in all (an equal share of each chain, at
    random without replacement) in single precision, without the sampler's unconstrained
    copies (``*_log__``): the shipped file is ~1 MB instead of ~9. The convergence figures
    in ``info`` are those of the full fit."""
    post = fit.posterior
    post = post[[v for v in post.data_vars if not v.endswith("__")]]
    tree = thinned(post, fit.tree["sample_stats"].to_dataset(), draws=draws, seed=seed)
    return dataclasses.replace(fit, tree=tree)


def describe(fit: AccuracyFit) -> str:
    a = fit.info
    return (
        f"accuracy fit: {a.n_rows} task accuracies of {a.n_configs} configurations, data {a.data_hash}, "
        f"fitted {a.created} on perplexity fit {a.ppl_fit.data_hash}"
    )


def other_perplexity_fit(fit: AccuracyFit, ppl_data_hash: str) -> str | None:
    """A note when ``fit`` was built on another perplexity fit than the one (of data hash
    ``ppl_data_hash``) whose degradations it is now given, else None."""
    if fit.info.ppl_fit.data_hash == ppl_data_hash:
        return None
    return (
        f"note: the accuracy fit was built on perplexity fit {fit.info.ppl_fit.data_hash}; "
        f"degradations now come from {ppl_data_hash}"
    )


def save(fit: AccuracyFit, path: str | os.PathLike) -> Path:
    """Write the fit atomically (temporary file, then rename)."""
    groups = {
        "posterior": fit.posterior,
        "sample_stats": fit.tree["sample_stats"].to_dataset(),
        "rows": _to_dataset(fit.rows),
        "configs": _to_dataset(fit.configs),
    }
    return write_fit_file(path, KIND, fit.info.to_attrs(), groups)


def load(path: str | os.PathLike) -> AccuracyFit:
    """Load an accuracy fit, refusing files that are not one or that fail their checks."""
    tree, attrs = read_fit_file(path, KIND)
    info = AccuracyFitInfo.from_attrs(attrs)
    rows = _from_dataset(tree["rows"].to_dataset())
    configs = _from_dataset(tree["configs"].to_dataset())
    if table_hash(rows, configs) != info.data_hash:
        raise QBayesError(f"{path}: corrupted accuracy fit: training rows do not match their hash")
    return AccuracyFit(tree=tree, rows=rows, configs=configs, info=info)
