"""The ``model`` grouping (a zero-sum intercept per model within its family, candidates
models/hierarchical-v3n.toml and -v3q.toml): it is nested in the family, and a model the fit
has not seen draws its effect at the scale of a new level of its family's models."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.covariates import covariates
from qbayes.model.fit import prepare
from qbayes.model.spec import load_spec


@pytest.fixture(scope="module")
def two_families(table):
    return table.filter(pl.col("family").is_in(["OPT", "BLOOM"]))


def test_models_are_nested_in_their_family(two_families):
    _, enc = prepare(two_families, load_spec("hierarchical-v3q"))
    assert enc.within["model"] == "family"
    parent = dict(zip(enc.levels["model"], enc.parents["model"]))
    truth = dict(two_families.select("model", "family").unique().iter_rows())
    assert parent == truth


def test_an_unseen_model_draws_at_its_familys_new_level_scale(two_families):
    spec = load_spec("hierarchical-v3q")
    fitted = two_families.filter(pl.col("model") != "OPT-1.3B")
    _, enc = prepare(fitted, spec)
    queries = pl.concat(
        [
            two_families.filter(pl.col("model") == "OPT-125M").head(1),  # seen
            two_families.filter(pl.col("model") == "OPT-1.3B").head(1),  # unseen, in a seen family
            two_families.filter(pl.col("model") == "OPT-1.3B")
            .head(1)
            .with_columns(
                pl.lit("Newfam").alias("family"), pl.lit("Newfam-1B").alias("model")
            ),  # unseen, in an unseen family
        ]
    )
    d = covariates(enc.read(queries))
    k_opt = sum(p == "OPT" for p in enc.parents["model"])
    assert k_opt == fitted.filter(pl.col("family") == "OPT")["model"].n_unique() > 1
    assert d.new_level("model").tolist() == [False, True, True]
    np.testing.assert_allclose(d.new_scale["model"][1:], [np.sqrt(1 + 1 / k_opt), 1.0])
    assert d.new_ids["model"].tolist() == [-1, 0, 1]  # two unseen models: two effects


def test_a_model_under_two_families_is_refused(two_families):
    clash = two_families.with_columns(
        pl.when(pl.col("model") == "BLOOM-560M").then(pl.lit("OPT-125M")).otherwise(pl.col("model")).alias("model")
    )
    with pytest.raises(QBayesError, match="not nested in 'family'"):
        prepare(clash, load_spec("hierarchical-v3q"))
