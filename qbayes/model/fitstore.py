"""The file layer every kind of fit shares: one netCDF file (an xarray DataTree) with a
format name and version in its root attributes, named groups, and a checksum of the
posterior draws. Reading refuses a file that is missing, unreadable, of another kind, of
another format version, missing a group, or whose draws fail their checksum, with one
message per case whatever the kind; each kind then checks what is its own (spec and data
hashes for perplexity fits, row hashes for accuracy fits). Thinning a fit to the draws a
shipped file holds is shared too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from qbayes.atomic import atomic_path
from qbayes.errors import QBayesError


@dataclass(frozen=True)
class FileKind:
    """What a kind of fit file is called, its format name and version, the groups it must
    hold besides the root, and the command that writes it afresh."""

    label: str  # "fit", "accuracy fit": as messages name it
    format: str
    version: int
    groups: tuple[str, ...]
    refit: str


def posterior_checksum(post: xr.Dataset) -> str:
    """A short hash of every posterior variable's name and values (in float64)."""
    h = hashlib.sha256()
    for name in sorted(post.data_vars):
        h.update(name.encode())
        h.update(np.ascontiguousarray(post[name].values, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def write_fit_file(path: str | os.PathLike, kind: FileKind, attrs: dict, groups: dict[str, xr.Dataset]) -> Path:
    """Write the file atomically (temporary file, then rename) with the format, version and
    posterior checksum added to ``attrs``."""
    path = Path(path)
    missing = [g for g in kind.groups if g not in groups]
    assert not missing, f"a {kind.label} file needs groups {missing}"
    root = {
        **attrs,
        "format": kind.format,
        "format_version": kind.version,
        "posterior_checksum": posterior_checksum(groups["posterior"]),
    }
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=root), **groups})
    with atomic_path(path) as tmp:
        tree.to_netcdf(tmp, engine="h5netcdf")
    return path


def read_fit_file(path: str | os.PathLike, kind: FileKind) -> tuple[xr.DataTree, dict]:
    """The file's tree (loaded into memory) and root attributes, after the checks every kind
    shares; raises :class:`QBayesError` naming the path and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise QBayesError(f"{path}: no such {kind.label} file")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    except Exception as exc:
        raise QBayesError(
            f"{path}: not a qbayes {kind.label} (cannot read it as netCDF: {type(exc).__name__})"
        ) from exc
    attrs = dict(tree.attrs)
    if attrs.get("format") != kind.format:
        raise QBayesError(f"{path}: not a qbayes {kind.label} (no '{kind.format}' format attribute)")
    version = int(attrs.get("format_version", 0))
    if version > kind.version:
        raise QBayesError(
            f"{path}: {kind.label} format v{version} is newer than this qbayes reads (v{kind.version}); upgrade qbayes"
        )
    if version < kind.version:
        raise QBayesError(
            f"{path}: {kind.label} format v{version} was written by an older qbayes "
            f"(this one reads v{kind.version}); refit with `{kind.refit}`"
        )
    missing = [g for g in kind.groups if g not in tree.children]
    if missing:
        raise QBayesError(f"{path}: corrupted {kind.label}: missing group(s) {', '.join(missing)}")
    if posterior_checksum(tree["posterior"].to_dataset()) != attrs.get("posterior_checksum"):
        raise QBayesError(f"{path}: corrupted {kind.label}: posterior draws do not match their checksum")
    return tree, attrs


def thinned(post: xr.Dataset, stats: xr.Dataset, *, draws: int, seed: int = 0) -> xr.DataTree:
    """The posterior and sampler statistics keeping ``draws`` draws in all (an equal share of
    each chain, chosen at random without replacement) in single precision: what the shipped
    fit files hold, a few MB instead of tens."""
    chains, total = post.sizes["chain"], post.sizes["draw"]
    per_chain = min(total, max(1, draws // chains))
    keep = np.sort(np.random.default_rng(seed).choice(total, size=per_chain, replace=False))

    def shrink(ds: xr.Dataset) -> xr.Dataset:
        ds = ds.isel(draw=keep).assign_coords(draw=np.arange(per_chain))
        return ds.map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v)

    return xr.DataTree.from_dict({"posterior": shrink(post), "sample_stats": shrink(stats)})
