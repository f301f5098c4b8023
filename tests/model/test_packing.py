"""The packed standard-normal vector (qbayes/model/packing.py): its zero-sum basis, and the
named parameters NumPy makes from draws of it agree with the PyMC model's own deterministics
(and Packing.solve inverts the map), for the default model (every Gaussian parameter packed,
the linear predictor as one gather) and for a spec with learned sds and centred effects
(sampled as themselves)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import xarray as xr

from qbayes.model import packing
from qbayes.model.covariates import covariates
from qbayes.model.fit import prepare
from qbayes.model.graph import build_model
from qbayes.model.spec import load_spec

LEARNED = """name = "learned"
likelihood = "log_student_t"
[effects]
method = { intercept = true, bits_slope = true, centred = ["intercept"] }
family = { intercept = true, per_channel = true }
eval_set = { intercept = true, fixed_sd = { intercept = 0.5 } }
"""


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_zero_sum_basis_is_orthonormal_and_sums_to_zero(k):
    m = packing.zero_sum_basis(k)
    assert m.shape == (k, k - 1)
    np.testing.assert_allclose(m.T @ m, np.eye(k - 1), atol=1e-12)
    np.testing.assert_allclose(m.sum(axis=0), 0.0, atol=1e-12)


def _draws_at_points(model, points):
    """The model's unobserved variables (deterministics included) at each point, by name."""
    outs = model.unobserved_value_vars
    fn = model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")
    rows = [dict(zip([v.name for v in outs], fn(pt))) for pt in points]
    return {name: np.stack([r[name] for r in rows]) for name in rows[0]}


@pytest.mark.parametrize("spec_text", [None, "hierarchical-v3l", "hierarchical-v3q", LEARNED])
def test_numpy_expansion_matches_the_models_deterministics(tmp_path, table, spec_text):
    if spec_text is None or spec_text.startswith("hierarchical"):
        spec = load_spec(spec_text or "hierarchical")
    else:
        (tmp_path / "learned.toml").write_text(spec_text)
        spec = load_spec(str(tmp_path / "learned.toml"))
    sub = pl.concat([table.filter(pl.col("w_bits") <= 2).head(60), table.filter(pl.col("w_bits") >= 3).head(140)])
    df, enc = prepare(sub, spec)
    model = build_model(spec, covariates(enc.read(df)), enc, df["delta"].to_numpy())
    rng = np.random.default_rng(0)
    base = model.initial_point(random_seed=1)
    points = [{k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in base.items()} for _ in range(3)]
    truth = _draws_at_points(model, points)
    # the sampler stores the free variables and theta only; 1 chain of 3 draws
    kept = [v.name for v in model.free_RVs] + [packing.THETA]
    posterior = xr.Dataset(
        {
            k: xr.DataArray(truth[k][None], dims=("chain", "draw", *(f"{k}_{i}" for i in range(truth[k].ndim - 1))))
            for k in kept
        }
    )
    pack = packing.plan(spec, enc)
    named = pack.expand(posterior, lambda dims: list(model.coords[dims]))
    assert packing.THETA not in named
    made = [b.name for b in pack.blocks] + [b.z_name for b in pack.blocks if b.z_name]
    assert "intercept" in made and "a_eval_set" in made and "z_a_eval_set" in made
    for name in made + [c for b in pack.blocks for c, _ in b.const]:
        np.testing.assert_allclose(named[name].values[0], truth[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # the inverse: the theta solve() finds for the first draw's named values expands back to them
    theta = pack.solve({k: named[k].values[0, 0] for k in named.data_vars})
    first = posterior.isel(draw=[0]).assign({packing.THETA: (("chain", "draw", "p"), theta[None, None])})
    again = pack.expand(first, lambda dims: list(model.coords[dims]))
    for name in made:
        np.testing.assert_allclose(again[name].values[0, 0], truth[name][0], rtol=1e-9, atol=1e-10, err_msg=name)
    if spec_text == "hierarchical-v3l":  # activation shifts and per-family collapse levels
        assert {"u_method", "collapse_kappa_family", "z_collapse_kappa_family"} <= set(made)
    if spec_text == "hierarchical-v3q":  # per-model intercepts within families, collapse odds by family x method
        assert {"a_model", "z_a_model", "collapse_family_method"} <= set(made)
    if spec_text is None or spec_text.startswith("hierarchical"):  # fixed sds: all packed
        assert {v.name for v in model.free_RVs} == {"theta_white", "log_tokens_sd", "noise_rel", "collapse_sd", "nu"}
    else:  # learned sds and the centred method intercept are sampled as themselves
        assert {"sd_b_method", "sd_a_family", "a_method"} <= {v.name for v in model.free_RVs}
        assert "a_method" not in made and "b_method" in made


def test_sparse_rows_give_the_same_product():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 12)) * (rng.uniform(size=(30, 12)) < 0.3)
    x[4] = 0.0  # a row with no entry
    v = rng.normal(size=12)
    from qbayes.model.mean import sparse_rows

    index, weight = sparse_rows(x)
    assert index.shape == weight.shape and index.shape[1] == int((x != 0).sum(axis=1).max())
    np.testing.assert_allclose((weight * v[index]).sum(axis=1), x @ v, atol=1e-12)


def test_sparse_product_gives_the_dense_product_and_its_gradient():
    """packing.sparse_product, which the PyMC graph uses for ``c + S @ theta``, has the dense
    product's value and gradient, including rows with no entry and repeated columns."""
    import pytensor
    import pytensor.tensor as pt

    from qbayes.model.packing import sparse_product

    rng = np.random.default_rng(6)
    s = rng.normal(size=(25, 10)) * (rng.uniform(size=(25, 10)) < 0.3)
    s[3] = 0.0  # a row with no entry
    c, v0, g = rng.normal(size=25), rng.normal(size=10), rng.normal(size=25)
    v = pt.dvector("v")
    out = sparse_product(c, s, v)
    fn = pytensor.function([v], [out, pytensor.grad(pt.dot(g, out), v)])
    value, grad = fn(v0)
    np.testing.assert_allclose(value, c + s @ v0, atol=1e-12)
    np.testing.assert_allclose(grad, s.T @ g, atol=1e-12)
