"""Executors: where and how the units of a collection run.

* ``local`` (the default): every model in turn, in this process, writing straight into
  ``--out``; what ``qbayes collect`` has always done.
* ``ray``: one Ray task per model and configuration group (:mod:`.tasks`), on a Ray
  cluster; each task writes its own shard and the driver merges the shards into
  ``--out`` as they complete (:mod:`.ray_executor`). Needs the ``ray`` extra.

Executors are looked up by name (:func:`make`); an executor's module (which imports the
collector, hence torch) loads only when the chosen executor runs, so ``import qbayes``
never imports torch or ray, and ``qbayes collect`` can check for torch and set up the
environment collection runs in (:func:`~.base.offline_environment`) between choosing
the executor and running it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from qbayes.collect.executors.base import CollectRequest, Executor, Outcome
from qbayes.errors import QBayesError
from qbayes.registry import Registry

__all__ = ["DEFAULT_RETRIES", "EXECUTORS", "ChosenExecutor", "CollectRequest", "Executor", "Outcome", "make"]

# name -> "module:class", imported only when the chosen executor runs
EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register_lazy("local", "qbayes.collect.executors.local:LocalExecutor")
EXECUTORS.register_lazy("ray", "qbayes.collect.executors.ray_executor:RayExecutor")
DEFAULT_RETRIES = 2


def make(name: str, *, address: str | None = None, retries: int | None = None) -> ChosenExecutor:
    """The executor called ``name``; ``address`` and ``retries`` are for ``ray`` only."""
    if name not in EXECUTORS:
        raise EXECUTORS.unknown(name)
    if name != "ray":
        for option, value in (("--address", address), ("--retries", retries)):
            if value is not None:
                raise QBayesError(f"{option} is for --executor ray; the {name} executor runs in this process")
    options = {}
    if name == "ray":
        retries = DEFAULT_RETRIES if retries is None else retries
        if retries < 0:
            raise QBayesError(f"--retries must be 0 or more, got {retries}")
        options = {"address": address, "retries": retries}
    return ChosenExecutor(name, options)


@dataclass(frozen=True)
class ChosenExecutor:
    """An executor chosen by name, with its options; its class loads when it runs."""

    name: str
    options: dict = field(default_factory=dict)

    def run(self, request: CollectRequest, console: Console) -> Outcome:
        return EXECUTORS.get(self.name)(**self.options).run(request, console)
