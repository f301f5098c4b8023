"""Named registries: CLI commands, executors, quantization methods, samplers, baselines
and covariates are each a :class:`Registry`, so they are looked up, listed and refused
the same way (modelled on lm-evaluation-harness's ``Registry``).

An unknown name is a :class:`~qbayes.errors.QBayesError` with a close-match suggestion
(:func:`qbayes.errors.unknown`): ``unknown sampler 'nutpei' (did you mean 'nutpie'?);
known: blackjax, numpyro, nutpie, pymc``. An entry is registered either as the object
itself or lazily, as ``"module:attribute"``, imported on the first :meth:`Registry.get`;
lazy entries keep heavy imports (torch, ray, the CLI's subcommands) out of the import
of the module that owns the registry::

    SAMPLERS = Registry("sampler")

    @SAMPLERS.register("nutpie")
    def _nutpie(model, cfg): ...

    EXECUTORS = Registry("executor")
    EXECUTORS.register_lazy("ray", "qbayes.collect.executors.ray_executor:RayExecutor")

Base layer: imports only :mod:`qbayes.errors` and the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

from qbayes.errors import QBayesError, unknown

T = TypeVar("T")
_MISSING = object()


@dataclass(frozen=True)
class _Lazy:
    """An entry not imported yet: ``module:attribute``."""

    module: str
    attr: str

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.attr)


class Registry(Generic[T]):
    """Objects by name, for one ``kind`` of thing ("sampler", "executor", ...).

    Iteration, :meth:`items` and :meth:`values` follow registration order (as a dict
    does); :meth:`names` is sorted, for messages and ``--help``. ``registry[name]`` is
    :meth:`get`: an unknown name raises :class:`QBayesError`, not ``KeyError``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | _Lazy] = {}

    # -- registering -------------------------------------------------------------------

    @overload
    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name, obj=_MISSING, *, replace=False):
        """Add ``obj`` under ``name`` and return it; without ``obj``, a decorator that
        does so. A name already taken is refused unless ``replace``."""
        if obj is _MISSING:
            return lambda o: self.register(name, o, replace=replace)
        self._add(name, obj, replace)
        return obj

    def register_lazy(self, name: str, target: str, *, replace: bool = False) -> None:
        """Add ``target`` (``"module:attribute"``) under ``name``; the module is imported
        by the first :meth:`get` of ``name``, not before."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"a lazy {self.kind} is 'module:attribute', got {target!r}")
        self._add(name, _Lazy(module, attr), replace)

    def _add(self, name: str, entry, replace: bool) -> None:
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._entries and not replace:
            raise QBayesError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove ``name``; nothing happens when it is not registered."""
        self._entries.pop(name, None)

    # -- looking up --------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The object called ``name`` (imported now if it was registered lazily)."""
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.resolve()
        return entry

    __getitem__ = get

    def unknown(self, name: str, *, kind: str | None = None) -> QBayesError:
        """The error for an unknown ``name``, with the closest known name and the list;
        ``kind`` replaces the registry's kind in the message ("feature in spec x")."""
        return unknown(kind or self.kind, name, self._entries)

    def available(self, name: str) -> bool:
        """Whether ``name`` is registered and its module can be found (a lazy entry's
        module may be left out of an install); imports nothing but parent packages."""
        entry = self._entries.get(name)
        if isinstance(entry, _Lazy):
            return importlib.util.find_spec(entry.module) is not None
        return name in self._entries

    def names(self) -> list[str]:
        """Every name, sorted."""
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, object) in registration order; imports every lazy entry."""
        return ((name, self.get(name)) for name in list(self._entries))

    def values(self) -> Iterator[T]:
        """Every object in registration order; imports every lazy entry."""
        return (obj for _, obj in self.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
