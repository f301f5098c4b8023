"""The in-sample check by cell (qbayes.model.ppc_cells), on the small session fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from qbayes.model import ppc_cells


@pytest.fixture(scope="module")
def check(small_fit):
    return ppc_cells.check_cells(small_fit, n_draws=400)


def test_cells_are_the_populated_family_method_bits_grouping_combinations(small_fit, check):
    keys = ppc_cells.cell_keys(small_fit.data)
    sizes = keys.group_by(keys.columns).len()
    populated = sizes.filter(pl.col("len") >= ppc_cells.MIN_ROWS)
    assert len(check.cells) == populated.height > 0
    assert check.rows_checked == populated["len"].sum() and check.rows_total == small_fit.data.height
    assert len({c.label for c in check.cells}) == len(check.cells)
    got = {(c.family, c.method, c.bits, c.grouping): c.rows for c in check.cells}
    assert got == {tuple(r[:4]): r[4] for r in populated.iter_rows()}
    # worst first, and a cell passes exactly when it is covered and centred
    badness = [c.badness for c in check.cells]
    assert badness == sorted(badness, reverse=True)
    assert all(c.ok == (c.coverage >= ppc_cells.COVERAGE_MIN and abs(c.bias) <= c.spread) for c in check.cells)


def test_cell_labels_name_activation_bits_and_per_channel_rows():
    rows = pl.DataFrame(
        {
            "family": ["A", "A", "A"],
            "method": ["RTN", "RTN", "SmoothQuant"],
            "w_bits": [3.0, 4.5, 4.0],
            "act_bits": [16.0, None, 8.0],
            "group_size": [128, None, None],
        }
    )
    keys = ppc_cells.cell_keys(rows)
    assert keys["bits"].to_list() == ["3", "4.5", "4a8"]
    assert keys["grouping"].to_list() == ["g128", "per-channel", "per-channel"]


def test_a_cell_the_posterior_does_not_reproduce_fails(small_fit, check):
    """The same posterior against training rows of one cell moved 20-fold: that cell is
    no longer covered, its median error is far outside its spread, and the check fails.
    Without the [cut] offsets: with them the moved rows would move their cell's offset too
    (tests/model/test_cut.py)."""
    small_fit = dataclasses.replace(small_fit, spec=dataclasses.replace(small_fit.spec, cut={}, cut_collapse=None))
    cell = max(check.cells, key=lambda c: c.rows)
    keys = ppc_cells.cell_keys(small_fit.data)
    mine = (
        (keys["family"] == cell.family)
        & (keys["method"] == cell.method)
        & (keys["bits"] == cell.bits)
        & (keys["grouping"] == cell.grouping)
    )
    moved = small_fit.data.with_columns(
        pl.when(mine).then(pl.col("delta").clip(0.01) * 20).otherwise(pl.col("delta")).alias("delta")
    )
    after = ppc_cells.check_cells(dataclasses.replace(small_fit, data=moved), n_draws=400)
    bad = next(c for c in after.cells if c.label == cell.label)
    assert not bad.ok and not after.ok
    assert bad.coverage < cell.coverage and bad.coverage < ppc_cells.COVERAGE_MIN
    assert bad.bias < -bad.spread and np.isclose(bad.bias, cell.bias - np.log(20), atol=1.5)
    # failed cells are listed before passing ones, each line saying which
    assert [c.label for c in after.cells].index(cell.label) < len(after.failed)
    lines = after.lines(worst=len(after.cells))
    assert lines[0].startswith(f"in-sample check: {len(after.cells) - len(after.failed)} of {len(after.cells)}")
    assert sum(line.startswith("  FAIL ") for line in lines) == len(after.failed)
    assert any(line.startswith(f"  FAIL {cell.label}: {cell.rows} rows") for line in lines)
