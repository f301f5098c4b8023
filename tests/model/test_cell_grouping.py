"""The ``cell`` grouping (family x method x bits x grouping, the in-sample check's cells; an
intercept of candidates models/hierarchical-v3v.toml, -v3w and -v3y): a row's cell is the one
the in-sample check puts it in, cells are nested in family x method, and a configuration the
fit has not seen draws its effect at the scale of a new level of its family x method."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model import ppc_cells
from qbayes.model.covariates import covariates
from qbayes.model.encoding import grouping_values
from qbayes.model.fit import fit_table, prepare
from qbayes.model.predict import Predictor
from qbayes.model.spec import SPEC_DIR, load_spec

from helpers import SMALL

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


def test_min_rows_leaves_sparse_cells_without_an_effect_of_their_own(two_families, tmp_path):
    """``min_rows`` on a grouping: a cell with fewer training rows is no level of the fit, so
    its rows read as an unseen cell of their family x method (a fresh draw at that parent's
    new-level scale), and the levels kept, their parents and the spec's hash follow."""
    spec_all = load_spec(SPEC)
    path = tmp_path / "min-rows.toml"
    text = (SPEC_DIR / f"{SPEC}.toml").read_text()
    assert "cell = { intercept = true," in text
    path.write_text(text.replace("cell = { intercept = true,", "cell = { intercept = true, min_rows = 5,"))
    spec = load_spec(str(path))
    assert spec.min_rows == {"cell": 5} and spec_all.min_rows == {}
    assert "min_rows" in spec.to_json() and "min_rows" not in spec_all.to_json()
    counts = grouping_values(two_families, "cell").value_counts()
    sparse = set(counts.filter(pl.col("count") < 5)["cell"].to_list())
    dense = set(counts.filter(pl.col("count") >= 5)["cell"].to_list())
    assert sparse and dense
    _, enc = prepare(two_families, spec)
    assert set(enc.levels["cell"]) == dense
    parent = dict(zip(enc.levels["cell"], enc.parents["cell"]))
    assert all(parent[c] == "|".join(c.split("|")[:2]) for c in dense)
    d = covariates(enc.read(two_families))
    unseen = d.new_level("cell")
    in_sparse = grouping_values(two_families, "cell").is_in(sparse).to_numpy()
    assert np.array_equal(unseen, in_sparse)
    assert not d.new_level("family_method").any()
    with pytest.raises(QBayesError, match="min_rows"):
        path.write_text(text.replace("cell = { intercept = true,", "cell = { intercept = true, min_rows = -1,"))
        load_spec(str(path))


def test_only_a_spec_that_uses_cells_encodes_them(two_families):
    """A cell's label joins five columns per row: a fit whose spec has no cell term (nor a
    [cut] of cells) does not encode the grouping, so reading rows for it (as every prediction
    does) computes none."""
    _, plain = prepare(two_families, load_spec("hierarchical-v3h"))
    _, with_cells = prepare(two_families, load_spec(SPEC))
    assert "cell" not in plain.levels and "cell" in with_cells.levels
    assert set(plain.levels) == set(with_cells.levels) - {"cell"}
    assert "cell" not in covariates(plain.read(two_families)).idx


def test_a_setting_is_a_cell_without_its_family_nested_in_its_method(two_families):
    """The ``setting`` grouping (candidate models/hierarchical-v3s2.toml): a row's method, bits
    and grouping, the same level for every family, nested in the method; like the cell it is
    encoded only for a spec that uses it."""
    settings = grouping_values(two_families, "setting").to_list()
    keys = ppc_cells.cell_keys(two_families).drop("family")
    assert settings == ["|".join(r) for r in keys.iter_rows()]
    per_family = pl.DataFrame({"s": settings, "f": two_families["family"]}).group_by("s").agg(pl.col("f").n_unique())
    assert per_family["f"].max() == 2  # OPT and BLOOM share settings
    _, enc = prepare(two_families, load_spec("hierarchical-v3s2"))
    assert set(enc.levels["setting"]) == set(settings)
    assert all(p == s.split("|")[0] for s, p in zip(enc.levels["setting"], enc.parents["setting"]))
    _, plain = prepare(two_families, load_spec("hierarchical"))
    assert "setting" not in plain.levels and {"cell", "model_cell"} <= set(plain.levels)


def test_min_families_keeps_only_settings_that_families_share(two_families, tmp_path):
    """``min_families`` on a grouping (candidate models/hierarchical-v3s4.toml): a setting seen in
    fewer families is no level of the fit, since in one family it is that family's cell; a table
    of one family has no level left, which is a fit whose rows all read as unseen settings, not
    an error."""
    text = (SPEC_DIR / "hierarchical-v3s4.toml").read_text()
    assert "min_families = 2" in text
    spec = load_spec(str(SPEC_DIR / "hierarchical-v3s4.toml"))
    assert spec.min_families == {"setting": 2} and "min_families" in spec.to_json()
    frame = pl.DataFrame({"s": grouping_values(two_families, "setting"), "f": two_families["family"]})
    shared = set(frame.group_by("s").agg(pl.col("f").n_unique()).filter(pl.col("f") >= 2)["s"].to_list())
    _, enc = prepare(two_families, spec)
    assert set(enc.levels["setting"]) == shared and 0 < len(shared) < frame["s"].n_unique()
    _, alone = prepare(two_families.filter(pl.col("family") == "OPT"), spec)
    assert alone.levels["setting"] == ()
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("min_families = 2", "min_families = 1.5"))
    with pytest.raises(QBayesError, match="min_families"):
        load_spec(str(path))


def test_a_fit_with_no_shared_setting_predicts_every_row_as_an_unseen_one(table, tmp_path):
    """One family's rows share no setting with another: the fit has no setting level, every
    row reads as an unseen setting of its method, and prediction draws its effect from the
    population (a spread of sd per draw), so the rows still get finite intervals."""
    spec_path = tmp_path / "setting-small.toml"
    spec_path.write_text(
        'name = "setting-small"\nlikelihood = "log_student_t"\nrows = "published"\n'
        "[effects.method]\nintercept = true\nbits_slope = true\nfixed_sd = { intercept = 1.0, bits_slope = 0.3 }\n"
        '[effects.setting]\nintercept = true\nwithin = "method"\nmin_families = 2\nfixed_sd = { intercept = 0.3 }\n'
    )
    opt = table.filter((pl.col("family") == "OPT") & (pl.col("eval_set") == "wikitext2"))
    fit = fit_table(opt, load_spec(str(spec_path)), SMALL)
    assert fit.encoding.levels["setting"] == ()
    pr = Predictor(fit, n_draws=200)
    rows = pr.prepare(opt.head(5).drop("delta", "doubt", strict=False))
    assert rows.covariates.new_level("setting").all()
    pred = pr.predict(opt.head(5).drop("delta", "doubt", strict=False))
    assert np.isfinite(pred["delta_q05"].to_numpy()).all() and np.isfinite(pred["delta_q95"].to_numpy()).all()
    assert (pred["delta_q95"] > pred["delta_q05"]).all()
