"""qbayes: predict, with calibrated uncertainty, how much quantization degrades an LLM.

The Python API (docs/api.md): `load` a posterior, predict a DataFrame of queries
with `Model.predict`. They are imported on first use, so ``import qbayes`` stays
fast (the command line imports this package too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbayes.errors import QBayesError

if TYPE_CHECKING:
    from qbayes.api.fit import fit
    from qbayes.api.model import Model, choose, load

__version__ = "0.1.0"
__all__ = ["Model", "QBayesError", "choose", "fit", "load"]


def __getattr__(name: str):
    """The public API, imported from qbayes.api on first use (fitting imports PyMC)."""
    if name in ("Model", "choose", "load"):
        from qbayes.api import model as module
    elif name == "fit":
        from qbayes.api import fit as module
    else:
        raise AttributeError(f"module 'qbayes' has no attribute '{name}'")
    return getattr(module, name)
