"""The public Python API, re-exported by the package face (``qbayes.load``, ``qbayes.choose``,
``qbayes.fit``, ``qbayes.validate``, :class:`qbayes.Model`); the command line does its
table work through the same functions. Its modules are imported apart, so predicting never
imports PyMC (only :mod:`qbayes.api.fit` and :mod:`qbayes.api.validate` do)."""
