"""Saving and loading fits: one netCDF file (an xarray DataTree) with everything
prediction and reports need, and checks that refuse a mismatched or corrupted file.

Groups: ``posterior``, ``sample_stats``, ``fit_data`` (the training rows, so a fit can be
re-examined without the database). Root attributes: format version, model spec (JSON)
and its hash, encoding (levels, models with latent tokens), posterior checksum, and the
fit's :class:`FitInfo` (data hash, package versions, sampler and its settings, timings,
convergence, the command line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xarray as xr

from qbayes.errors import QBayesError
from qbayes.model.diagnostics import Convergence
from qbayes.model.encoding import Encoding
from qbayes.model.fitstore import FileKind, posterior_checksum, read_fit_file, thinned, write_fit_file
from qbayes.model.samplers import SampleConfig
from qbayes.model.spec import ModelSpec
from qbayes.model.table import STANDARD

FORMAT = "qbayes-fit"
FORMAT_VERSION = 8  # v2: block design (arch), curvature; v3: centred and nested effects, per-channel-only levels;
#                     v4: size slopes (n_*); v5: ln D centred within designs (spec tokens_within);
#                     v6: noise terms (spec noise); v7: designs of known families (known_designs);
#                     v8: training tokens of seen and known families (family_tokens_seen, known_tokens),
#                         parent groupings (within) for new nested levels
# columns of the training rows added within a format version: a fit file without them reads them
# as null, and a column that is null throughout is left out of the data hash, so files written
# before it keep their hash (vocab_size: the collapse level's anchor, model.collapse; format:
# the named format of a row, for a spec with format effects)
ADDED_DATA_COLUMNS = {"vocab_size": pl.Float64, "format": pl.String}
DATA_COLUMNS = {**{c: t for c, t in STANDARD.items() if c not in ADDED_DATA_COLUMNS}, "delta": pl.Float64}
KIND = FileKind("fit", FORMAT, FORMAT_VERSION, ("posterior", "sample_stats", "fit_data"), "qbayes fit")


@dataclass(frozen=True)
class FitInfo:
    """How a fit was made: when, from which rows (``data_hash``, ``n_rows``, exclusions), by
    which sampler with which settings, how long it took, whether it converged, with which
    package versions and command line; for a thinned copy, how it was thinned. Saved as
    the fit file's root attributes (:meth:`to_attrs`), read back by :meth:`from_attrs`."""

    created: str
    sampler: str
    sample_config: SampleConfig
    exclude_families: tuple[str, ...]
    include_suspect: bool
    compile_s: float
    sample_s: float
    convergence: Convergence
    versions: dict[str, str]
    command: str
    n_rows: int
    data_hash: str
    thinned_from: str | None = None  # "4 x 1000 draws": the fit a shipped posterior was thinned from
    thinned_seed: int | None = None
    rounds: int = 1  # rounds of chains drawn: 1 + the extensions the diagnostics asked for

    @property
    def seed(self) -> int:
        return self.sample_config.seed

    def to_attrs(self) -> dict[str, str | int | float]:
        """netCDF attributes: numbers and strings as they are, the rest as JSON strings."""
        out: dict[str, str | int | float] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if dataclasses.is_dataclass(v):
                v = json.dumps(dataclasses.asdict(v))
            elif isinstance(v, (tuple, dict)):
                v = json.dumps(list(v) if isinstance(v, tuple) else v)
            elif isinstance(v, bool):
                v = int(v)
            out[f.name] = v
        out["seed"] = self.seed  # also at top level, for readers of the raw file
        return out

    @classmethod
    def from_attrs(cls, attrs: dict) -> FitInfo:
        """The record in a fit file's root attributes (other attributes are ignored)."""

        def obj(name):
            v = attrs[name]
            return json.loads(v) if isinstance(v, str) else v

        def opt(name, kind):
            return kind(attrs[name]) if name in attrs else None

        return cls(
            created=str(attrs["created"]),
            sampler=str(attrs["sampler"]),
            sample_config=SampleConfig(**obj("sample_config")),
            exclude_families=tuple(obj("exclude_families")),
            include_suspect=bool(int(attrs["include_suspect"])),
            compile_s=float(attrs["compile_s"]),
            sample_s=float(attrs["sample_s"]),
            convergence=Convergence(**obj("convergence")),
            versions=dict(obj("versions")),
            command=str(attrs["command"]),
            n_rows=int(attrs["n_rows"]),
            data_hash=str(attrs["data_hash"]),
            thinned_from=opt("thinned_from", str),
            thinned_seed=opt("thinned_seed", int),
            rounds=int(attrs.get("rounds", 1)),
        )


@dataclass
class Fit:
    """A fitted model: its spec, the encoding of its data, the posterior (``tree``), the
    training rows it saw (``data``) and how it was made (``info``)."""

    spec: ModelSpec
    encoding: Encoding
    tree: xr.DataTree
    data: pl.DataFrame
    info: FitInfo
    posterior_checksum: str = ""  # set by save and load

    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()

    @property
    def idata(self) -> xr.DataTree:
        """The posterior and sample stats as the DataTree ArviZ's plots and summaries read
        (``arviz_plots.plot_trace(fit.idata)``)."""
        return self.tree


def data_hash(df: pl.DataFrame) -> str:
    added = [c for c in ADDED_DATA_COLUMNS if c in df.columns and df.get_column(c).null_count() < df.height]
    return hashlib.sha256(df.select(*DATA_COLUMNS, *added).write_csv().encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "qbayes",
        "pymc",
        "pytensor",
        "nutpie",
        "jax",
        "blackjax",
        "numpy",
        "polars",
        "xarray",
        "arviz-base",
        "arviz-stats",
    ):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _table_to_dataset(df: pl.DataFrame) -> xr.Dataset:
    out = {}
    added = {c: t for c, t in ADDED_DATA_COLUMNS.items() if c in df.columns}
    for name, dtype in {**DATA_COLUMNS, **added}.items():
        s = df.get_column(name)
        values = s.fill_null("").to_numpy().astype(str) if dtype == pl.String else s.cast(pl.Float64).to_numpy()
        out[name] = ("row", values)
    return xr.Dataset(out)


def _dataset_to_table(ds: xr.Dataset) -> pl.DataFrame:
    cols = {}
    for name, dtype in {**DATA_COLUMNS, **ADDED_DATA_COLUMNS}.items():
        if name not in ds:  # written before the column was added
            cols[name] = pl.Series(name, [None] * ds.sizes["row"], dtype=dtype)
            continue
        values = ds[name].values
        s = pl.Series(name, values.astype(str) if dtype == pl.String else values.astype(np.float64))
        if dtype == pl.String:
            s = s.replace("", None)
        else:
            s = s.fill_nan(None).cast(dtype)
        cols[name] = s
    return pl.DataFrame(cols)


def thin(fit: Fit, *, draws: int, seed: int = 0) -> Fit:
    """A copy of ``fit`` keeping ``draws`` posterior draws in all (an equal share of each
    chain, chosen at random without replacement) in single precision: the shipped default
    posterior (``qbayes fit --ship``) is a few MB instead of tens. The convergence figures
    in its attributes are those of the full fit."""
    post = fit.tree["posterior"].to_dataset()
    tree = thinned(post, fit.tree["sample_stats"].to_dataset(), draws=draws, seed=seed)
    chains, total = post.sizes["chain"], post.sizes["draw"]
    info = dataclasses.replace(fit.info, thinned_from=f"{chains} x {total} draws", thinned_seed=seed)
    return Fit(spec=fit.spec, encoding=fit.encoding, tree=tree, data=fit.data, info=info)


def describe(fit: Fit) -> str:
    """One line saying which fit answers: model, data hash and date."""
    a = fit.info
    thinned = f", {a.thinned_from} thinned" if a.thinned_from else ""
    return (
        f"fit: model {fit.spec.name} (spec {fit.spec.hash}), data {a.data_hash}, "
        f"{a.n_rows} rows, fitted {a.created}{thinned}"
    )


def save(fit: Fit, path: str | os.PathLike) -> Path:
    """Write the fit atomically (temporary file, then rename)."""
    if fit.info.data_hash != data_hash(fit.data):
        raise QBayesError("the fit's training rows do not match its data hash; refit")
    attrs = {
        **fit.info.to_attrs(),
        "model": fit.spec.name,
        "spec_json": fit.spec.to_json(),
        "spec_hash": fit.spec.hash,
        "encoding_json": json.dumps(fit.encoding.to_dict()),
    }
    groups = {
        "posterior": fit.tree["posterior"].to_dataset(),
        "sample_stats": fit.tree["sample_stats"].to_dataset(),
        "fit_data": _table_to_dataset(fit.data),
    }
    out = write_fit_file(path, KIND, attrs, groups)
    fit.posterior_checksum = posterior_checksum(groups["posterior"])
    return out


def load(path: str | os.PathLike) -> Fit:
    """Load a fit, refusing files that are not qbayes fits or that fail their checks."""
    tree, attrs = read_fit_file(path, KIND)
    spec = ModelSpec.from_json(attrs["spec_json"])
    if spec.hash != attrs.get("spec_hash"):
        raise QBayesError(f"{path}: corrupted fit: model spec does not match its hash")
    data = _dataset_to_table(tree["fit_data"].to_dataset())
    if data_hash(data) != attrs.get("data_hash"):
        raise QBayesError(f"{path}: corrupted fit: training data do not match their hash")
    return Fit(
        spec=spec,
        encoding=Encoding.from_dict(json.loads(attrs["encoding_json"])),
        tree=tree,
        data=data,
        info=FitInfo.from_attrs(attrs),
        posterior_checksum=attrs["posterior_checksum"],
    )
