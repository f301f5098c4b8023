"""Executors: where and how the units of a collection run.

* ``local`` (the default): every model in turn, in this process, writing straight into
  ``--out``; what ``qbayes collect`` has always done.
* ``ray``: one Ray task per model and configuration group (:mod:`.tasks`), on a Ray
  cluster; each task writes its own shard and the driver merges the shards into
  ``--out`` as they complete (:mod:`.ray_executor`). Needs the ``ray`` extra.

Executors are looked up by name (:func:`make`); modules load only when chosen, so
``import qbayes`` never imports torch or ray.
"""

from __future__ import annotations

from qbayes.collect.executors.base import CollectRequest, Executor, Outcome
from qbayes.errors import QBayesError
from qbayes.registry import Registry

__all__ = ["DEFAULT_RETRIES", "EXECUTORS", "CollectRequest", "Executor", "Outcome", "make"]

# name -> "module:class", imported only when chosen
EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register_lazy("local", "qbayes.collect.executors.local:LocalExecutor")
EXECUTORS.register_lazy("ray", "qbayes.collect.executors.ray_executor:RayExecutor")
DEFAULT_RETRIES = 2


def make(name: str, *, address: str | None = None, retries: int | None = None) -> Executor:
    """The executor called ``name``; ``address`` and ``retries`` are for ``ray`` only."""
    cls = EXECUTORS.get(name)
    if name != "ray":
        for option, value in (("--address", address), ("--retries", retries)):
            if value is not None:
                raise QBayesError(f"{option} is for --executor ray; the {name} executor runs in this process")
        return cls()
    retries = DEFAULT_RETRIES if retries is None else retries
    if retries < 0:
        raise QBayesError(f"--retries must be 0 or more, got {retries}")
    return cls(address=address, retries=retries)
