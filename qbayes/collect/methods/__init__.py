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
from qbayes.registry import Registry

REGISTRY: Registry[Method] = Registry("method")


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under its own name; a name already taken is refused unless ``replace``."""
    return REGISTRY.register(method.name, method, replace=replace)


def unregister(name: str) -> None:
    REGISTRY.unregister(name)


def get(name: str) -> Method:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


for _method in (RTN(), Quanto(), GPTQ(), AWQ(), AutoAWQ()):
    register(_method)
