"""The public Python API, re-exported by the package face (``qbayes.load``, ``qbayes.choose``,
``qbayes.fit``, ``qbayes.validate``, `qbayes.Model`); the command line does its
table work through the same functions. Its modules are imported apart, so predicting never
imports PyMC (only `qbayes.api.fit` and `qbayes.api.validate` do)."""
