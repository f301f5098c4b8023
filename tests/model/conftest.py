"""Small real fits shared by the model tests (two families, short chains): the default model,
and the comparison model with block-design effects."""

from __future__ import annotations

import polars as pl
import pytest

from helpers import SHIPPED_DB
from qbayes.db import store
from qbayes.model import fitfile
from qbayes.model.table import training_table
from qbayes.model.fit import FitOptions, fit_table
from qbayes.model.samplers import SampleConfig
from qbayes.model.spec import load_spec

SMALL = FitOptions(sample=SampleConfig(draws=150, tune=150, chains=2, seed=7, progress=False))


@pytest.fixture(scope="session")
def table() -> pl.DataFrame:
    return training_table(store.load(SHIPPED_DB), rows="published")


def _fit_two_families(tmp_path_factory, table, model: str, name: str):
    """``model`` fitted to OPT and LLaMA-1 rows (wikitext2 only), saved as ``name``."""
    sub = table.filter(pl.col("family").is_in(["OPT", "LLaMA-1"]) & (pl.col("eval_set") == "wikitext2"))
    return fitfile.save(fit_table(sub, load_spec(model), SMALL), tmp_path_factory.mktemp("fit") / name)


@pytest.fixture(scope="session")
def small_fit_path(tmp_path_factory, table):
    """The default model on two families, saved."""
    return _fit_two_families(tmp_path_factory, table, "hierarchical", "small.nc")


@pytest.fixture(scope="session")
def small_fit(small_fit_path):
    return fitfile.load(small_fit_path)


@pytest.fixture(scope="session")
def arch_fit_path(tmp_path_factory, table):
    """The comparison model with block-design effects (hierarchical-v1) on the same rows as
    small_fit, for what only a model with designs does: designs of unseen families, ln D
    within designs, families nested in designs."""
    return _fit_two_families(tmp_path_factory, table, "hierarchical-v1", "arch.nc")


@pytest.fixture(scope="session")
def arch_fit(arch_fit_path):
    return fitfile.load(arch_fit_path)
