"""Typed records survive their file form: every field, nested ones included."""

from __future__ import annotations

import dataclasses

import pytest
import xarray as xr

from qbayes.errors import QBayesError
from qbayes.model import fitfile
from qbayes.model.diagnostics import Convergence
from qbayes.model.fitfile import FitInfo
from qbayes.model.samplers import SampleConfig


def _info(**over) -> FitInfo:
    base = FitInfo(
        created="2026-12-04T10:00:00+00:00",
        sampler="nutpie",
        sample_config=SampleConfig(
            draws=12, tune=34, chains=3, seed=5, target_accept=0.85, progress=False, low_rank_mass_matrix=False
        ),
        exclude_families=("OPT", "Llama-2"),
        include_suspect=True,
        compile_s=1.5,
        sample_s=2.25,
        convergence=Convergence(
            max_rhat=1.004,
            min_ess_bulk=812.5,
            min_ess_tail=455.0,
            divergences=2,
            min_bfmi=0.71,
            worst_rhat_var="a_method",
        ),
        versions={"qbayes": "0.1.0", "pymc": "5.28.5"},
        command="qbayes fit --draws 12",
        n_rows=321,
        data_hash="0123456789abcdef",
        thinned_from="3 x 12 draws",
        thinned_seed=9,
    )
    return dataclasses.replace(base, **over)


def test_fit_info_round_trips_through_netcdf_attributes(tmp_path):
    info = _info()
    attrs = info.to_attrs()
    assert all(isinstance(v, (str, int, float)) for v in attrs.values())
    # every field is written (the seed also at top level, for readers of the raw file)
    assert set(attrs) == {f.name for f in dataclasses.fields(FitInfo)} | {"seed"}
    path = tmp_path / "attrs.nc"
    xr.DataTree(xr.Dataset(attrs=attrs)).to_netcdf(path, engine="h5netcdf")
    back = FitInfo.from_attrs(dict(xr.open_datatree(path, engine="h5netcdf").attrs))
    assert back == info
    assert isinstance(back.sample_config, SampleConfig) and isinstance(back.convergence, Convergence)


def test_fit_info_of_an_unthinned_fit_has_no_thinning():
    info = _info(thinned_from=None, thinned_seed=None)
    assert "thinned_from" not in info.to_attrs()
    assert FitInfo.from_attrs(info.to_attrs()) == info


def test_loaded_fit_carries_the_saved_info(small_fit, small_fit_path):
    again = fitfile.load(small_fit_path)
    assert again.info == small_fit.info
    assert again.posterior_checksum == small_fit.posterior_checksum != ""


def test_a_fit_whose_rows_do_not_match_its_record_is_not_saved(small_fit, tmp_path):
    changed = dataclasses.replace(small_fit, data=small_fit.data.head(small_fit.data.height - 1))
    out = tmp_path / "fit.nc"
    with pytest.raises(QBayesError, match="the fit's training rows do not match its data hash; refit"):
        fitfile.save(changed, out)
    assert list(tmp_path.iterdir()) == []
