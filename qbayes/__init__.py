"""qbayes: predict, with calibrated uncertainty, how much quantization degrades an LLM.

The Python API (docs/api.md): :func:`load` a posterior, predict a DataFrame of queries
with :meth:`Model.predict`. They are imported on first use, so ``import qbayes`` stays
fast (the command line imports this package too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbayes.errors import QBayesError

if TYPE_CHECKING:
    from qbayes.api import Model, load

__version__ = "0.1.0"
__all__ = ["Model", "QBayesError", "load"]
PUBLIC = ("Model", "load")  # re-exported from qbayes.api on first use


def __getattr__(name: str):
    if name in PUBLIC:
        import qbayes.api

        return getattr(qbayes.api, name)
    raise AttributeError(f"module 'qbayes' has no attribute '{name}'")
