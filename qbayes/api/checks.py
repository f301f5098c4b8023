"""Checks of the Python API's arguments, before any work: what the command line's option
types (click) refuse on the command line, the API refuses here with a `QBayesError` that
names the argument, so a notebook gets the same kind of message for a string where a
number belongs."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

from qbayes.errors import QBayesError
from qbayes.model.samplers import SampleConfig

DEFAULT_EXTENSIONS = SampleConfig().extensions


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (not a bool, not a float with a fraction), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise QBayesError(f"{name} must be an integer, not {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise QBayesError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return int(value)


def number(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float (any real number but a bool), within [``low``, ``high``]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise QBayesError(f"{name} must be a number, not {type(value).__name__} {value!r}")
    if low is not None and high is not None and not low <= value <= high:
        raise QBayesError(f"{name} must be between {low:g} and {high:g}, not {value!r}")
    if low is not None and value < low:
        raise QBayesError(f"{name} must be at least {low:g}, not {value!r}")
    if high is not None and value > high:
        raise QBayesError(f"{name} must be at most {high:g}, not {value!r}")
    return float(value)


def optional_number(name: str, value: Any) -> float | None:
    """``value`` as a float, or None."""
    return None if value is None else number(name, value)


def flag(name: str, value: Any) -> bool:
    """``value``, a bool (a command-line flag)."""
    if not isinstance(value, bool):
        raise QBayesError(f"{name} must be True or False, not {value!r}")
    return value


def text(name: str, value: Any, *, optional: bool = False) -> str | None:
    """``value``, a string (or None where ``optional``)."""
    if (value is None and optional) or isinstance(value, str):
        return value
    raise QBayesError(f"{name} must be a string, not {type(value).__name__} {value!r}")


def choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value``, one of ``choices``."""
    if value not in choices:
        raise QBayesError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return value


def names(name: str, value: Any) -> tuple[str, ...]:
    """``value`` as a tuple of strings: a sequence of strings, or one string as one name."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise QBayesError(f"{name} must be a string or a list of strings, not {value!r}")
    return tuple(value)


def numbers_of(name: str, value: Any) -> tuple[float, ...]:
    """``value`` as a tuple of floats: a sequence of numbers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise QBayesError(f"{name} must be a list of numbers, not {value!r}")
    return tuple(number(name, v) for v in value)


def group_sizes(name: str, value: Any) -> tuple[int | None, ...]:
    """``value`` as a tuple of group sizes: a sequence of positive integers or None (per channel)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise QBayesError(f"{name} must be a list of integers or None (per channel), not {value!r}")
    return tuple(None if g is None else integer(name, g, 1) for g in value)


def path(name: str, value: Any) -> str | os.PathLike:
    """``value``, a path (a string or an os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)):
        raise QBayesError(f"{name} must be a path (a string or pathlib.Path), not {type(value).__name__}")
    return value


def paths(name: str, value: Any) -> list[str | os.PathLike]:
    """``value`` as a list of paths: None (none), one path, or a sequence of them."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    if not isinstance(value, Sequence):
        raise QBayesError(f"{name} must be a path or a list of paths, not {type(value).__name__}")
    return [path(name, v) for v in value]


def sample_config(
    *,
    draws: Any,
    tune: Any,
    chains: Any,
    seed: Any,
    target_accept: Any,
    progress: bool,
    extensions: Any = DEFAULT_EXTENSIONS,
    min_steps: int = 10,
) -> SampleConfig:
    """A fit's sampler settings, each argument checked by name: ``draws`` and ``tune`` at
    least ``min_steps``, ``chains`` at least 1, ``target_accept`` in [0.5, 0.999],
    ``extensions`` (extra rounds of chains) at least 0."""
    return SampleConfig(
        draws=integer("draws", draws, min_steps),
        tune=integer("tune", tune, min_steps),
        chains=integer("chains", chains, 1),
        seed=integer("seed", seed),
        target_accept=number("target_accept", target_accept, 0.5, 0.999),
        progress=progress,
        extensions=integer("extensions", extensions, 0),
    )
