"""The cut model (spec [cut], qbayes/model/cells.py): seen cells and model cells conditioned
after the fit on their own training rows, on the small session fit (the default spec)."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model import cells, conditioning, ppc_cells
from qbayes.model.encoding import grouping_values
from qbayes.model.predict import Predictor, cut_name
from qbayes.model.spec import ModelSpec, load_spec


def _naive_log_likelihood(rows: cells.CellRows, b: np.ndarray) -> np.ndarray:
    """The mixture's log density, summed over rows, in float64 and without shortcuts."""
    loc = rows.loc[None] + b[:, None]
    x = (rows.y[None, :, None] - loc) / rows.scale[None]
    law = rows.const - (rows.nu + 1) / 2 * np.log1p(x**2 / rows.nu) - np.log(rows.scale)[None]
    if rows.logit is None:
        return law.sum(axis=1)
    p = 1 / (1 + np.exp(-(rows.logit[None] + rows.slope * b[:, None])))
    col = -0.5 * ((rows.y[:, None] - rows.col_loc) / rows.col_sd) ** 2 - 0.5 * np.log(2 * np.pi) - np.log(rows.col_sd)
    return np.log((1 - p) * np.exp(law) + p * np.exp(col)[None]).sum(axis=1)


def _rows(rng, n: int, s: int, collapse: bool) -> cells.CellRows:
    nu = rng.uniform(2.5, 8.0, s)
    rows = cells.CellRows(
        y=rng.normal(-1.0, 1.5, n),
        loc=rng.normal(-1.0, 1.0, (n, s)),
        scale=rng.uniform(0.2, 0.6, (n, s)),
        nu=nu,
        const=cells.log_t_const(nu),
    )
    if not collapse:
        return rows
    return dataclasses.replace(
        rows,
        logit=rng.normal(-2.0, 2.0, (n, s)),
        slope=rng.uniform(0.5, 2.0, s),
        col_loc=rng.normal(1.0, 1.5, (n, s)),  # some rows near their collapse level, some far
        col_sd=rng.uniform(0.2, 0.5, s),
    )


@pytest.mark.parametrize("collapse", [False, True])
def test_grid_likelihood_is_the_mixture_density(collapse):
    rng = np.random.default_rng(3)
    rows = _rows(rng, n=7, s=300, collapse=collapse)
    b = rng.normal(0.0, 1.0, (5, 300))
    got, want = cells.log_likelihood(rows, b), _naive_log_likelihood(rows, b)
    assert got.shape == (5, 300)
    # single precision; rows far from their collapse level drop a collapse density below e^-40
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-3)


def test_collapse_level_offsets_follow_the_collapsed_rows():
    """Rows that collapse 0.3 above their collapse level move the level's offset there; rows
    that come nowhere near it leave the offset at its prior."""
    rng = np.random.default_rng(11)
    n, s, sd = 8, 2000, 0.2
    nu = np.full(s, 4.0)
    rows = cells.CellRows(
        y=np.full(n, 2.3) + rng.normal(0, 0.02, n),
        loc=np.full((n, s), -1.0),
        scale=np.full((n, s), 0.3),
        nu=nu,
        const=cells.log_t_const(nu),
        logit=np.full((n, s), 1.0),
        slope=np.full(s, 1.5),
        col_loc=np.full((n, s), 2.0),
        col_sd=np.full(s, 0.05),
    )
    c = cells.draw_offsets(rows, sd, np.random.default_rng(2), collapse=True)
    assert abs(c.mean() - 0.3) < 0.02 and c.std() < 0.03
    b = rng.normal(0, 1, (4, s)) * 0.1
    got, want = (
        cells.collapse_log_likelihood(rows, b),
        _naive_log_likelihood(rows.shifted(np.zeros((n, s)), b[0]), b[:1] * 0),
    )
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    far = dataclasses.replace(rows, y=np.full(n, -1.0))
    c = cells.draw_offsets(far, sd, np.random.default_rng(3), collapse=True)
    assert abs(c.mean()) < 0.03 and abs(c.std() / sd - 1) < 0.1


def test_offsets_follow_the_conjugate_posterior_of_nearly_normal_rows():
    """With (almost) normal noise of known scale the offset's posterior is normal: precision
    n / sigma^2 + 1 / sd^2, mean (sum of residuals / sigma^2) / precision. Every draw here has
    the same parameters, so the offsets drawn across draws are a sample from it."""
    rng = np.random.default_rng(7)
    n, s, sigma, sd = 6, 20_000, 0.4, 0.5
    resid = rng.normal(0.8, sigma, n)
    nu = np.full(s, 1e7)
    rows = cells.CellRows(
        y=resid,
        loc=np.zeros((n, s)),
        scale=np.full((n, s), sigma),
        nu=nu,
        const=cells.log_t_const(nu),
    )
    b = cells.draw_offsets(rows, sd, np.random.default_rng(1))
    precision = n / sigma**2 + 1 / sd**2
    mean, post_sd = resid.sum() / sigma**2 / precision, precision**-0.5
    assert abs(b.mean() - mean) < 4 * post_sd / np.sqrt(s)
    assert abs(b.std() / post_sd - 1) < 0.03
    # shrunk toward 0 from the rows' mean residual by the prior
    assert 0 < b.mean() < resid.mean()


def test_cut_specs_are_checked(tmp_path):
    spec = ModelSpec.from_json(load_spec("hierarchical").to_json())
    assert spec.cut == {"cell": 0.5, "model_cell": 0.3} and spec.cut_collapse == 0.2
    assert {"cell", "model_cell"} <= set(spec.groupings)
    # a spec without [cut] encodes neither grouping and keeps the JSON (and hash) it had
    plain = load_spec("hierarchical-v3h")
    assert plain.cut == {} and '"cut"' not in plain.to_json() and "model_cell" not in plain.groupings
    for likelihood, cut, message in (
        ("log_student_t", "cel = 0.5", "did you mean 'cell'"),
        ("log_student_t", "cell = 0", "positive sds"),
        ("log_student_t", "cell = true", "positive sds"),
        ("student_t", "cell = 0.5", "log_student_t likelihood only"),
        ("log_student_t", "cell = 0.5\ncollapse = 0.2", "needs \\[collapse\\]"),
    ):
        path = tmp_path / "spec.toml"
        path.write_text(
            f'name = "x"\nlikelihood = "{likelihood}"\n[effects]\n'
            f"family = {{ intercept = true, fixed_sd = {{ intercept = 0.5 }} }}\n[cut]\n{cut}\n"
        )
        with pytest.raises(QBayesError, match=message):
            load_spec(str(path))


def test_model_cells_name_the_model_and_its_configuration():
    rows = pl.DataFrame(
        {
            "family": ["A", "A"],
            "model": ["A-7B", "A-13B"],
            "method": ["RTN", "RTN"],
            "w_bits": [3.0, 3.0],
            "act_bits": [16.0, 16.0],
            "group_size": [128, 128],
        }
    )
    assert grouping_values(rows, "cell").to_list() == ["A|RTN|3|g128"] * 2
    assert grouping_values(rows, "model_cell").to_list() == ["A-7B|RTN|3|g128", "A-13B|RTN|3|g128"]


def _uncut(fit):
    return dataclasses.replace(fit, spec=dataclasses.replace(fit.spec, cut={}, cut_collapse=None))


def test_a_seen_configuration_is_predicted_from_its_own_rows(small_fit):
    """Asked for the rows it was fitted to, the cut model is closer to them than the shared
    parameters alone, cell by cell, and passes at least as many cells of the in-sample check."""
    assert small_fit.spec.cut
    data = small_fit.data
    y = data.get_column("delta").to_numpy()
    errors = {}
    for name, fit in (("cut", small_fit), ("shared", _uncut(small_fit))):
        pred = Predictor(fit, n_draws=400, seed=2).predict(data)
        errors[name] = np.abs(np.log(pred["delta_q50"].to_numpy() + 0.01) - np.log(np.maximum(y, -0.005) + 0.01))
    assert np.median(errors["cut"]) < 0.8 * np.median(errors["shared"])
    with_cut = ppc_cells.check_cells(small_fit, n_draws=400)
    without = ppc_cells.check_cells(_uncut(small_fit), n_draws=400)
    assert len(with_cut.failed) <= len(without.failed)


def test_an_unseen_family_is_predicted_by_the_shared_parameters_alone(small_fit, table):
    """No cell of a family the fit has not seen is seen: its predictions are those of the
    fit without [cut], draw for draw."""
    new = table.filter(pl.col("family") == "BLOOM").head(12)
    cut = Predictor(small_fit, n_draws=300, seed=4)
    shared = Predictor(_uncut(small_fit), n_draws=300, seed=4)
    np.testing.assert_array_equal(cut.mean(cut.prepare(new)), shared.mean(shared.prepare(new)))
    assert cut.predict(new)["new_cell"].all()
    assert not cut.predict(small_fit.data.head(20))["new_cell"].any()


def test_offsets_do_not_depend_on_the_rows_asked_with(small_fit):
    """A level's offsets are drawn once per predictor from its own rows with its own seed:
    one row predicted alone or among all the training rows gets the same draws."""
    data = small_fit.data
    row = data.slice(40, 1)
    alone = Predictor(small_fit, n_draws=300, seed=5)
    together = Predictor(small_fit, n_draws=300, seed=5)
    m_all = together.mean(together.prepare(data))
    np.testing.assert_allclose(alone.mean(alone.prepare(row))[0], m_all[40], rtol=1e-6)
    drawn = together.draws.p[cut_name("model_cell")]
    assert not np.isnan(drawn).any()  # every seen level drawn, the unseen row at 0
    assert np.all(drawn[-1] == 0)


def test_conditioning_on_measured_rows_keeps_the_cut_offsets(small_fit, table):
    """Observed rows of a seen family: their cells' offsets enter the likelihood of the
    update, and the conditioned draws predict through them."""
    seen = small_fit.data.filter(pl.col("model") == "LLaMA-7B").head(3)
    observed = conditioning.observed_training(seen, "mine.csv")
    queries = small_fit.data.filter(pl.col("model") == "LLaMA-7B").slice(3, 5)
    predictor = Predictor(small_fit, n_draws=300, seed=6)
    c = conditioning.condition(predictor, observed, queries)
    assert c.update.ess > 1
    out = c.predictor.predict(c.rows)
    assert out.height == 5 and out["delta_q50"].is_finite().all()
    assert not np.isnan(c.predictor.draws.p[cut_name("cell")]).all()
