"""The Bayesian model of quantization degradation: specs, PyMC graph, fitting, prediction.

PyTensor warns on import when it finds no BLAS to link its C code against. qbayes does
not depend on that path: nutpie compiles the model with numba, and prediction runs in
NumPy with its own bundled BLAS. The flag below states that choice explicitly (a user's
own PYTENSOR_FLAGS wins), which keeps every command's output free of the warning.
"""

import os

if "blas__ldflags" not in os.environ.get("PYTENSOR_FLAGS", ""):
    os.environ["PYTENSOR_FLAGS"] = ",".join(filter(None, [os.environ.get("PYTENSOR_FLAGS", ""), "blas__ldflags="]))
