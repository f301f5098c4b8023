"""qbayes: predict, with calibrated uncertainty, how much quantization degrades an LLM.

The Python API (docs/api.md): `load` a posterior and predict a DataFrame of queries with
`Model.predict`; `choose`, `compare` and `suggest_runs` as ``qbayes choose``,
``compare`` and ``suggest`` do; `fit`, `fit_accuracy`, `validate`, `validate_accuracy`
and `write_report` as ``qbayes fit``, ``fit-accuracy``, ``validate`` and ``report`` do
(``qbayes.suggest`` and ``qbayes.report`` are the packages behind the last two). They are imported on first use, so
``import qbayes`` stays fast (the command line imports this package too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbayes.errors import QBayesError

if TYPE_CHECKING:
    from qbayes.api.fit import fit, fit_accuracy
    from qbayes.api.model import Model, choose, compare, load, suggest_runs
    from qbayes.api.report import write_report
    from qbayes.api.validate import validate, validate_accuracy

__version__ = "0.1.0"
# public name -> the qbayes.api module that defines it (fitting and validating import PyMC)
API = {
    "Model": "model",
    "load": "model",
    "choose": "model",
    "compare": "model",
    "suggest_runs": "model",
    "fit": "fit",
    "fit_accuracy": "fit",
    "validate": "validate",
    "validate_accuracy": "validate",
    "write_report": "report",
}
__all__ = [
    "Model",
    "QBayesError",
    "choose",
    "compare",
    "fit",
    "fit_accuracy",
    "load",
    "suggest_runs",
    "validate",
    "validate_accuracy",
    "write_report",
]


def __getattr__(name: str):
    """The public API, imported from qbayes.api on first use."""
    where = API.get(name)
    if where == "model":
        from qbayes.api import model as module
    elif where == "fit":
        from qbayes.api import fit as module
    elif where == "validate":
        from qbayes.api import validate as module
    elif where == "report":
        from qbayes.api import report as module
    else:
        raise AttributeError(f"module 'qbayes' has no attribute '{name}'")
    return getattr(module, name)
