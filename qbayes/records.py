"""Frozen records (dataclasses) to and from plain JSON values.

A record becomes an object keyed by its field names, lists and tuples become lists, dicts
stay dicts; a field marked :data:`FLAT` has its keys merged into its record's object
(``{"model": ..., "mdae": ...}`` rather than ``{"model": ..., "scores": {"mdae": ...}}``),
and a flat field that is None adds no keys. :func:`from_plain` is the inverse, guided by
the type hints (generic records such as ``Fold[T]`` included). It trusts its input: a
reader of files people edit checks them first (:mod:`qbayes.evaluation.summary`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import TypeVar

FLAT = {"flat": True}  # field metadata: the field's keys go into its record's JSON object


def to_plain(x):
    """Records as dicts (a FLAT field's keys merged into its record's), recursively."""
    if dataclasses.is_dataclass(x):
        out = {}
        for f in dataclasses.fields(x):
            value = getattr(x, f.name)
            if f.metadata.get("flat"):
                out.update(to_plain(value) if value is not None else {})
            else:
                out[f.name] = to_plain(value)
        return out
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x


def from_plain(tp, data):
    """``data`` (parsed JSON) as a value of type ``tp``: the inverse of :func:`to_plain`."""
    if data is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return from_plain(inner, data)
    if dataclasses.is_dataclass(origin or tp):
        return _record(origin or tp, args, data)
    if origin is list:
        return [from_plain(args[0], v) for v in data]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in data)
        return tuple(from_plain(a, v) for a, v in zip(args, data, strict=True))
    if origin is dict:
        return {k: from_plain(args[1], v) for k, v in data.items()}
    return data


def _record(cls, args: tuple, data: dict):
    hints = typing.get_type_hints(cls)
    bound = dict(zip(getattr(cls, "__parameters__", ()), args))  # T -> its type in Fold[T] etc.
    fields = dataclasses.fields(cls)
    own = {f.name for f in fields if not f.metadata.get("flat")}
    values = {}
    for f in fields:
        tp = hints[f.name]
        if isinstance(tp, TypeVar):
            tp = bound[tp]
        elif getattr(tp, "__parameters__", ()):
            tp = tp[tuple(bound[p] for p in tp.__parameters__)]
        part = {k: v for k, v in data.items() if k not in own} if f.name not in own else data[f.name]
        values[f.name] = from_plain(tp, part)
    return cls(**values)
