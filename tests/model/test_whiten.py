"""Whitening the packed vector (qbayes/model/whiten.py) on a model whose posterior is known
exactly: a Gaussian prior N(0, I) on theta and Gaussian observations of A @ theta. The
Laplace approximation at the mode is then the posterior itself, so the whitening's shift is
the posterior mean and chol @ chol.T its covariance, and nutpie's draws after whitening
match them."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest

from qbayes.model import whiten


@pytest.fixture(scope="module")
def gaussian():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 3)) * np.array([1.0, 10.0, 0.3])  # very different scales
    y = a @ np.array([0.5, -0.2, 1.0]) + rng.normal(0, 0.5, 40)
    with pm.Model(check_bounds=False) as model:
        theta = whiten.standard_normal("theta", 3)
        pm.Normal("y", pm.math.dot(a, theta), 0.5, observed=y)
    precision = np.eye(3) + a.T @ a / 0.25
    cov = np.linalg.inv(precision)
    return model, cov @ (a.T @ y / 0.25), cov


def test_the_whitening_is_the_laplace_approximation(gaussian):
    import nutpie

    model, mean, cov = gaussian
    compiled = nutpie.compile_pymc_model(model, var_names=["theta"])
    white = whiten.precondition(compiled, seed=1)
    np.testing.assert_allclose(white.shared_data[whiten.SHIFT], mean, rtol=1e-4, atol=1e-6)
    chol = white.shared_data[whiten.CHOL]
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-3, atol=1e-8)
    assert compiled.shared_data[whiten.SHIFT].tolist() == [0.0, 0.0, 0.0]  # the original is left as it was

    draws = nutpie.sample(white, draws=1000, tune=100, chains=2, cores=1, seed=2, progress_bar=False)
    theta = draws.posterior["theta"].values.reshape(-1, 3)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(theta.mean(axis=0) - mean) < 5 * sd / np.sqrt(500))  # ESS >= 500 of 2000
    np.testing.assert_allclose(theta.std(axis=0), sd, rtol=0.15)
    assert int(draws.sample_stats["n_steps"].mean()) <= 7  # isotropic: short trees


def test_a_model_without_the_vector_is_left_alone():
    import nutpie

    with pm.Model() as model:
        pm.Normal("x", 0, 1)
    compiled = nutpie.compile_pymc_model(model)
    assert whiten.precondition(compiled, seed=1) is compiled
