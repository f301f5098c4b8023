"""The registry of quantization methods.

Each method is a small unit (a :class:`~qbayes.collect.methods.base.Method` subclass)
registered under a short name used in grid files and on the command line. Unknown names
get a close-match suggestion. A third-party or test method is added with
:func:`register`.

Built in: ``rtn`` (reference, written here), ``quanto`` (optimum-quanto), ``gptq`` and
``awq`` (llm-compressor), ``autoawq`` (AutoAWQ, CUDA only, optional).
"""

from __future__ import annotations

from qbayes.collect.methods.autoawq_backend import AutoAWQ
from qbayes.collect.methods.base import Method
from qbayes.collect.methods.llmc_backend import AWQ, GPTQ
from qbayes.collect.methods.quanto_backend import Quanto
from qbayes.collect.methods.rtn_method import RTN
from qbayes.errors import QBayesError, unknown

REGISTRY: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    if not method.name:
        raise ValueError("a method needs a name")
    if method.name in REGISTRY and not replace:
        raise QBayesError(f"method '{method.name}' is already registered")
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise unknown("method", name, REGISTRY)
    return REGISTRY[name]


def names() -> list[str]:
    return sorted(REGISTRY)


for _method in (RTN(), Quanto(), GPTQ(), AWQ(), AutoAWQ()):
    register(_method)
