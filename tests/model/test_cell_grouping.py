"""The ``cell`` grouping (family x method x bits x grouping, the in-sample check's cells; an
intercept of candidates models/hierarchical-v3v.toml, -v3w and -v3y): a row's cell is the one
the in-sample check puts it in, cells are nested in family x method, and a configuration the
fit has not seen draws its effect at the scale of a new level of its family x method."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.model import ppc_cells
from qbayes.model.covariates import covariates
from qbayes.model.encoding import grouping_values
from qbayes.model.fit import prepare
from qbayes.model.spec import load_spec

SPEC = "hierarchical-v3v"  # candidate v: the default plus a cell intercept


@pytest.fixture(scope="module")
def two_families(table):
    return table.filter(pl.col("family").is_in(["OPT", "BLOOM"]))


def test_a_rows_cell_is_the_in_sample_checks_cell(two_families):
    cells = grouping_values(two_families, "cell").to_list()
    keys = ppc_cells.cell_keys(two_families)
    assert cells == ["|".join(r) for r in keys.iter_rows()]
    assert None not in cells and len(set(cells)) > 10
    # a table without a column the cell is read from has no cells, as for any grouping
    assert grouping_values(two_families.drop("act_bits"), "cell").null_count() == two_families.height


def test_cells_are_nested_in_family_method(two_families):
    _, enc = prepare(two_families, load_spec(SPEC))
    assert enc.within["cell"] == "family_method"
    parent = dict(zip(enc.levels["cell"], enc.parents["cell"]))
    cells = pl.DataFrame(
        {"cell": grouping_values(two_families, "cell"), "fm": grouping_values(two_families, "family_method")}
    )
    assert parent == dict(cells.unique().iter_rows())
    assert len(parent) > len(set(parent.values())) > 1


def test_an_unseen_configuration_draws_at_its_family_methods_new_level_scale(two_families):
    rtn = two_families.filter((pl.col("family") == "OPT") & (pl.col("method") == "RTN"))
    bits = sorted(rtn["w_bits"].unique().to_list())
    assert len(bits) > 2
    held = bits[0]
    fitted = two_families.filter(
        ~((pl.col("family") == "OPT") & (pl.col("method") == "RTN") & (pl.col("w_bits") == held))
    )
    _, enc = prepare(fitted, load_spec(SPEC))
    queries = pl.concat(
        [
            rtn.filter(pl.col("w_bits") != held).head(1),  # a seen cell
            rtn.filter(pl.col("w_bits") == held).head(1),  # an unseen cell of a seen family x method
        ]
    )
    d = covariates(enc.read(queries))
    seen_cells = grouping_values(fitted, "cell").unique().to_list()
    k = sum(p == "OPT|RTN" for p in enc.parents["cell"])
    assert k == sum(c.startswith("OPT|RTN|") for c in seen_cells) > 1
    assert d.new_level("cell").tolist() == [False, True]
    np.testing.assert_allclose(d.new_scale["cell"][1], np.sqrt(1 + 1 / k))
    assert d.new_level("family_method").tolist() == [False, False]
