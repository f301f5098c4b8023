"""Whitening the packed vector before NUTS: a Laplace approximation as a change of variables.

The packed vector ``theta`` (packing.py) is sampled as ``theta = shift + chol @ w``: with
``shift`` the posterior mode and ``chol`` a square root of the Laplace covariance there, the
posterior of ``w`` is close to N(0, I), so NUTS starts near the typical set with a mass
matrix that already fits, and the warm-up, which took most of a fit's gradient evaluations
(the first 200 steps of 300 at ~100-250 gradients each), is short. It is a linear change of
variables with a constant Jacobian: the model is the same whatever ``shift`` and ``chol``
are, only the geometry the sampler sees changes.

``shift`` and ``chol`` are shared variables of the compiled model, at 0 and I when the model
is built (the PyMC sampler samples it so: ``w`` is then ``theta``); :func:`precondition` finds the mode with L-BFGS on
the compiled density (a few hundred gradients), the Hessian there by central differences of
the gradient, and gives the compiled model those values and an initial point near the mode.
"""

from __future__ import annotations

import ctypes
import dataclasses

import numpy as np

SHIFT, CHOL, INV, LOGDET = "theta_shift", "theta_chol", "theta_chol_inv", "theta_logdet"
WHITE = "theta_white"  # the sampled vector w
MIN_CURVATURE = 1e-3  # |eigenvalues| of the negative Hessian are floored here (flat directions)


def _logp(w, shift, chol, inv, logdet):
    import pytensor.tensor as pt

    theta = shift + pt.dot(chol, w)
    return -0.5 * pt.sum(theta**2) - 0.5 * w.shape[-1] * np.log(2 * np.pi) + logdet


def _random(shift, chol, inv, logdet, rng=None, size=None):
    rng = np.random.default_rng() if rng is None else rng
    theta = rng.standard_normal(shift.shape)
    return inv @ (theta - shift)


def standard_normal(name: str, size: int):
    """``name ~ N(0, I_size)`` in the model in context, sampled as ``w`` with ``name = shift +
    chol @ w`` (a deterministic); returns ``name``."""
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    shared = [
        pytensor.shared(np.zeros(size), name=SHIFT),
        pytensor.shared(np.eye(size), name=CHOL),
        pytensor.shared(np.eye(size), name=INV),
        pytensor.shared(np.float64(0.0), name=LOGDET),  # log |det chol|
    ]
    w = pm.CustomDist(WHITE, *shared, logp=_logp, random=_random, signature="(n),(n,n),(n,n),()->(n)")
    return pm.Deterministic(name, shared[0] + pt.dot(shared[1], w))


def _density(compiled):
    """The compiled log density and gradient as a Python function of the flat point, called
    through the C function the sampler uses (calling ``compiled.logp_func`` instead would
    compile the same graph a second time for Python's calling convention)."""
    fn = compiled.compiled_logp_func.ctypes
    n = compiled.n_dim
    user_data = ctypes.c_void_p(compiled.user_data.ctypes.data)
    as_ptr = ctypes.POINTER(ctypes.c_double)

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        grad, logp = np.empty(n), np.empty(())
        code = fn(n, x.ctypes.data_as(as_ptr), grad.ctypes.data_as(as_ptr), logp.ctypes.data_as(as_ptr), user_data)
        return (float(logp), grad) if code == 0 else (-np.inf, np.zeros(n))

    return f


def _mode(f, x0: np.ndarray) -> np.ndarray | None:
    from scipy import optimize

    def negative(x):
        lp, g = f(x)
        return -float(lp), -np.asarray(g, dtype=np.float64)

    r = optimize.minimize(negative, x0, jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    return r.x if np.all(np.isfinite(r.x)) and np.isfinite(r.fun) else None


def _hessian(f, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Negative Hessian of the log density at ``x``, by central differences of the gradient."""
    n = x.size
    h = np.empty((n, n))
    for i in range(n):
        step = np.zeros(n)
        step[i] = eps
        h[:, i] = (np.asarray(f(x + step)[1]) - np.asarray(f(x - step)[1])) / (2 * eps)
    return -(h + h.T) / 2


def precondition(compiled, seed: int):
    """``compiled`` (nutpie's compiled PyMC model) with the whitening's shared values set from
    the Laplace approximation at the mode, and chains started around the mode (uniform jitter
    of one posterior sd per coordinate, as PyMC jitters its starting points); unchanged where
    the model has no whitened vector or the mode cannot be found."""
    if SHIFT not in compiled.shared_data:
        return compiled
    names, slices, _ = compiled.shape_info
    block = slices[names.index(WHITE)]
    f = _density(compiled)
    x0 = np.asarray(compiled.initial_point_func(seed), dtype=np.float64)
    mode = _mode(f, x0)
    if mode is None:
        return compiled
    # where the optimiser stopped short of the mode (a saddle, a flat ridge) the curvature is
    # read by its size; theta's prior is N(0, I), so no direction of it is given more than
    # the prior's unit variance, and no other coordinate a jitter wider than 1 (as PyMC's)
    values, vectors = np.linalg.eigh(_hessian(f, mode))
    cov = (vectors / np.maximum(np.abs(values), MIN_CURVATURE)) @ vectors.T
    sub = cov[block, block]
    w_vals, w_vecs = np.linalg.eigh((sub + sub.T) / 2)
    root = w_vecs * np.sqrt(np.clip(w_vals, MIN_CURVATURE**2, 1.0))  # sub = root @ root.T
    shift = mode[block].copy()
    new = {SHIFT: shift, CHOL: root, INV: np.linalg.inv(root), LOGDET: np.linalg.slogdet(root)[1]}
    out = compiled.with_data(**{k: v for k, v in new.items() if k in compiled.shared_data})
    sd = np.minimum(np.sqrt(np.maximum(np.diag(cov), 0.0)), 1.0)
    start = mode.copy()
    start[block] = 0.0  # w = 0 is theta = shift
    sd[block] = 1.0

    def initial_point(seed):
        rng = np.random.default_rng(seed)
        return start + sd * rng.uniform(-1.0, 1.0, size=start.size)

    return dataclasses.replace(out, initial_point_func=initial_point)
