"""Saving and loading fits: one netCDF file (an xarray DataTree) with everything
prediction and reports need, and checks that refuse a mismatched or corrupted file.

Groups: ``posterior``, ``sample_stats``, ``fit_data`` (the training rows, so a fit can be
re-examined without the database). Root attributes: format version, model spec (JSON)
and its hash, encoding (levels, models with latent tokens), data hash, posterior
checksum, package versions, seed, sampler, timings, convergence and the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import xarray as xr

from qbayes.atomic import atomic_path
from qbayes.errors import QBayesError
from qbayes.model.design import STANDARD, Encoding
from qbayes.model.spec import ModelSpec

FORMAT = "qbayes-fit"
FORMAT_VERSION = 8  # v2: block design (arch), curvature; v3: centred and nested effects, per-channel-only levels;
#                     v4: size slopes (n_*); v5: ln D centred within designs (spec tokens_within);
#                     v6: noise terms (spec noise); v7: designs of known families (known_designs);
#                     v8: training tokens of seen and known families (family_tokens_seen, known_tokens),
#                         parent groupings (within) for new nested levels
DATA_COLUMNS = {**STANDARD, "delta": pl.Float64}


@dataclass
class Fit:
    spec: ModelSpec
    encoding: Encoding
    tree: xr.DataTree
    data: pl.DataFrame
    attrs: dict = field(default_factory=dict)

    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()


def data_hash(df: pl.DataFrame) -> str:
    return hashlib.sha256(df.select(list(DATA_COLUMNS)).write_csv().encode()).hexdigest()[:16]


def posterior_checksum(post: xr.Dataset) -> str:
    h = hashlib.sha256()
    for name in sorted(post.data_vars):
        h.update(name.encode())
        h.update(np.ascontiguousarray(post[name].values, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("qbayes", "pymc", "pytensor", "nutpie", "jax", "blackjax", "numpy", "polars", "xarray",
                "arviz-base", "arviz-stats"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _table_to_dataset(df: pl.DataFrame) -> xr.Dataset:
    out = {}
    for name, dtype in DATA_COLUMNS.items():
        s = df.get_column(name)
        values = s.fill_null("").to_numpy().astype(str) if dtype == pl.String else s.cast(pl.Float64).to_numpy()
        out[name] = ("row", values)
    return xr.Dataset(out)


def _dataset_to_table(ds: xr.Dataset) -> pl.DataFrame:
    cols = {}
    for name, dtype in DATA_COLUMNS.items():
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
    stats = fit.tree["sample_stats"].to_dataset()
    chains, total = post.sizes["chain"], post.sizes["draw"]
    per_chain = min(total, max(1, draws // chains))
    keep = np.sort(np.random.default_rng(seed).choice(total, size=per_chain, replace=False))

    def shrink(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.isel(draw=keep).assign_coords(draw=np.arange(per_chain))
        return ds.map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v)

    tree = xr.DataTree.from_dict({"posterior": shrink(post), "sample_stats": shrink(stats)})
    attrs = {**fit.attrs, "thinned_from": f"{chains} x {total} draws", "thinned_seed": seed}
    return Fit(spec=fit.spec, encoding=fit.encoding, tree=tree, data=fit.data, attrs=attrs)


def describe(fit: Fit) -> str:
    """One line saying which fit answers: model, data hash and date."""
    a = fit.attrs
    thinned = f", {a['thinned_from']} thinned" if "thinned_from" in a else ""
    return (f"fit: model {fit.spec.name} (spec {a.get('spec_hash', fit.spec.hash)}), data {a.get('data_hash', '?')}, "
            f"{a.get('n_rows', fit.data.height)} rows, fitted {a.get('created', 'at an unrecorded time')}{thinned}")


def save(fit: Fit, path: str | os.PathLike) -> Path:
    """Write the fit atomically (temporary file, then rename)."""
    path = Path(path)
    attrs = dict(fit.attrs)
    attrs.update({
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": fit.spec.name, "spec_json": fit.spec.to_json(), "spec_hash": fit.spec.hash,
        "encoding_json": json.dumps(fit.encoding.to_dict()),
        "data_hash": data_hash(fit.data), "posterior_checksum": posterior_checksum(fit.posterior),
    })
    tree = xr.DataTree.from_dict({
        "/": xr.Dataset(attrs={k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in attrs.items()}),
        "posterior": fit.tree["posterior"].to_dataset(),
        "sample_stats": fit.tree["sample_stats"].to_dataset(),
        "fit_data": _table_to_dataset(fit.data),
    })
    with atomic_path(path) as tmp:
        tree.to_netcdf(tmp, engine="h5netcdf")
    fit.attrs = attrs
    return path


def load(path: str | os.PathLike) -> Fit:
    """Load a fit, refusing files that are not qbayes fits or that fail their checks."""
    path = Path(path)
    if not path.is_file():
        raise QBayesError(f"{path}: no such fit file")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    except Exception as exc:
        raise QBayesError(f"{path}: not a qbayes fit (cannot read it as netCDF: {type(exc).__name__})") from exc
    attrs = dict(tree.attrs)
    if attrs.get("format") != FORMAT:
        raise QBayesError(f"{path}: not a qbayes fit (no '{FORMAT}' format attribute)")
    version = int(attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise QBayesError(f"{path}: fit format v{version} is newer than this qbayes reads "
                          f"(v{FORMAT_VERSION}); upgrade qbayes")
    if version < FORMAT_VERSION:
        raise QBayesError(f"{path}: fit format v{version} was written by an older qbayes "
                          f"(this one reads v{FORMAT_VERSION}: the model's inputs changed); refit with `qbayes fit`")
    missing = [g for g in ("posterior", "sample_stats", "fit_data") if g not in tree.children]
    if missing:
        raise QBayesError(f"{path}: corrupted fit: missing group(s) {', '.join(missing)}")
    spec = ModelSpec.from_json(attrs["spec_json"])
    if spec.hash != attrs.get("spec_hash"):
        raise QBayesError(f"{path}: corrupted fit: model spec does not match its hash")
    data = _dataset_to_table(tree["fit_data"].to_dataset())
    if data_hash(data) != attrs.get("data_hash"):
        raise QBayesError(f"{path}: corrupted fit: training data do not match their hash")
    post = tree["posterior"].to_dataset()
    if posterior_checksum(post) != attrs.get("posterior_checksum"):
        raise QBayesError(f"{path}: corrupted fit: posterior draws do not match their checksum")
    enc = Encoding.from_dict(json.loads(attrs["encoding_json"]))
    return Fit(spec=spec, encoding=enc, tree=tree, data=data, attrs=attrs)
