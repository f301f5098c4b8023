"""The shipped posterior (data/default-fit.nc): current with the shipped database and the
default spec, the answer of predict and choose without --fit, refused when tampered with."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from qbayes import resources
from qbayes.db import store
from qbayes.model import fitfile
from qbayes.model.fit import prepare
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table

REGENERATE = "regenerate it with `qbayes fit --ship`"


@pytest.fixture(scope="module")
def shipped():
    path = resources.shipped_fit()
    assert path is not None, f"qbayes ships no posterior: {REGENERATE}"
    return path, fitfile.load(path)


def test_shipped_posterior_is_the_default_model_on_the_shipped_data(shipped):
    _, fit = shipped
    spec = load_spec("hierarchical")
    assert fit.spec.hash == spec.hash, f"models/hierarchical.toml changed since the posterior was made: {REGENERATE}"
    df, _ = prepare(training_table(store.load(resources.database_dir()), rows=spec.rows), spec)
    assert fit.info.data_hash == fitfile.data_hash(df), f"the shipped database changed since: {REGENERATE}"
    post = fit.posterior
    assert post.sizes["chain"] * post.sizes["draw"] == 1000 and post["intercept"].dtype == np.float32
    conv = fit.info.convergence
    assert conv.max_rhat <= 1.01 and conv.min_ess_bulk >= 400 and conv.divergences == 0


def test_predict_and_choose_answer_from_the_shipped_posterior(shipped, cli, tmp_path):
    path, fit = shipped
    r = cli("predict", "--family", "Qwen2.5", "--params-b", 7, "--format", "Q4_K_M", "--fp16-ppl", 6.85)
    assert r.code == 0, r.err
    assert f"fit: model hierarchical (spec {fit.spec.hash}), data {fit.info.data_hash}" in r.err
    assert str(path) in r.err
    out = tmp_path / "options.csv"
    r = cli(
        "choose",
        "--budget-gb",
        12,
        "--family",
        "Qwen2.5",
        "--candidate",
        "Qwen2.5-7B:7.6:6.85",
        "--format",
        "Q4_K_M",
        "--format",
        "Q8_0",
        "--output",
        out,
    )
    assert r.code == 0, r.err
    assert "fit: model hierarchical" in r.err and out.exists()


def test_a_tampered_shipped_posterior_is_refused(shipped, cli, tmp_path):
    path, _ = shipped
    tree = xr.open_datatree(path, engine="h5netcdf").load()
    post = tree["posterior"].to_dataset()
    post["gamma_d"] = post["gamma_d"] + np.float32(0.1)
    tree["posterior"] = xr.DataTree(post)
    bad = tmp_path / "default-fit.nc"
    tree.to_netcdf(bad, engine="h5netcdf")
    out = tmp_path / "p.csv"
    r = cli(
        "predict",
        "--fit",
        bad,
        "--family",
        "Qwen2.5",
        "--params-b",
        7,
        "--format",
        "Q4_K_M",
        "--fp16-ppl",
        6.85,
        "--output",
        out,
    )
    assert r.code == 2 and "posterior draws do not match their checksum" in r.err
    assert not out.exists()


def test_without_a_shipped_posterior_predict_says_what_to_do(cli, monkeypatch):
    monkeypatch.setattr(resources, "shipped_fit", lambda: None)
    r = cli("predict", "--family", "Qwen2.5", "--params-b", 7, "--format", "Q4_K_M", "--fp16-ppl", 6.85)
    assert r.code == 2 and "no --fit given" in r.err and "qbayes fit" in r.err


@pytest.mark.parametrize("args", [("--model", "pooled"), ("--exclude-family", "OPT"), ("--include-suspect",)])
def test_fit_ship_refuses_anything_but_the_default_model_on_the_shipped_data(shipped, cli, tmp_path, args):
    path, _ = shipped
    before = path.read_bytes()
    r = cli("fit", "--ship", *args, "--out", tmp_path / "x.nc")
    assert r.code == 2 and "--ship writes the posterior qbayes ships" in r.err
    assert path.read_bytes() == before and not (tmp_path / "x.nc").exists()


def test_fit_rows_all_takes_published_and_collected_rows_together(cli):
    """--rows overrides the spec's rows: the prior check runs on every row with a baseline."""
    db = store.load(resources.database_dir())
    n_all = training_table(db, rows="all").height
    assert n_all > training_table(db, rows="published").height
    r = cli("fit", "--rows", "all", "--prior-check")
    assert r.code == 0, r.err
    assert f"x {n_all} rows)" in r.out
