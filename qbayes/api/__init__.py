"""The public Python API, re-exported by the package face (``qbayes.load`` and its
`qbayes.Model`, ``qbayes.choose``, ``compare``, ``suggest_runs``, ``fit``, ``fit_accuracy``,
``validate``, ``validate_accuracy``, ``write_report``); every command does its work through
the same functions, and only reads files, prints and writes. Its modules are imported apart,
so predicting never imports PyMC (`qbayes.api.fit`, `qbayes.api.validate` and
`qbayes.api.report` do)."""
