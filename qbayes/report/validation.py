"""Reading the held-out validation results that ``qbayes validate --json PATH`` writes.

Shape::

    {"models": [str, ...],
     "overall": [{"model", "n", "mdae", "mae", "cov50", "cov90", "crps"}, ...],
     "overall_3bits": [the same, over rows of 3 or more nominal bits],
     "per_family": [{"family", "model", "n", "mdae", ...}, ...],
     "per_cell": [{"cell", "model", "n", "mdae", ...}, ...],
     "calibration": [{"model", "nominal", "observed"}, ...],
     "gaps": [{"model", "reference", "n", "gap", "lo", "hi", "level", "p_reference_better"}, ...],
     "settings": {...}}

``gaps``, ``per_cell`` (scores per kind of row: nominal bits, groups or per channel) and
``overall_3bits`` are optional (files written before they existed have none);
``settings.scheme`` says which validation scheme wrote the file ("lofo" where absent).

Metric values may be null or NaN (baselines without intervals). A file of another shape
is refused with a message that names what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from qbayes.errors import QBayesError

METRICS = ("mdae", "mae", "cov50", "cov90", "crps")
REQUIRED = ("models", "overall", "per_family", "calibration")
GAP_FIELDS = ("n", "gap", "lo", "hi", "level", "p_reference_better")


def _number(x, where: str) -> float:
    if x is None:
        return math.nan
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise QBayesError(f"{where}: expected a number or null, got {x!r}")
    return float(x)


def _rows(raw: dict, key: str, required: tuple[str, ...], numeric: tuple[str, ...], path) -> list[dict]:
    """Rows of ``key``: ``required`` fields must be there; other ``numeric`` ones default to NaN."""
    rows = raw.get(key)
    if not isinstance(rows, list):
        raise QBayesError(f"{path}: '{key}' must be a list")
    out = []
    for i, r in enumerate(rows):
        where = f"{path}: {key}[{i}]"
        if not isinstance(r, dict):
            raise QBayesError(f"{where}: expected an object")
        missing = [f for f in required if f not in r]
        if missing:
            raise QBayesError(f"{where}: missing {', '.join(missing)}")
        row = {f: str(r[f]) for f in required if f not in numeric}
        row.update({f: _number(r.get(f), f"{where}.{f}") for f in numeric})
        out.append(row)
    return out


def parse(raw, path: str | os.PathLike = "<validation>") -> dict:
    """Check and normalise a validation document (NaN for missing metrics)."""
    if not isinstance(raw, dict):
        raise QBayesError(f"{path}: not a qbayes validation file (expected a JSON object)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise QBayesError(f"{path}: not a qbayes validation file (missing {', '.join(missing)}); "
                          "write one with `qbayes validate --json PATH`")
    models = raw["models"]
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise QBayesError(f"{path}: 'models' must be a list of names")
    settings = raw.get("settings", {})
    return {
        "models": list(models),
        "overall": _rows(raw, "overall", ("model",), ("n", *METRICS), path),
        "per_family": _rows(raw, "per_family", ("family", "model"), ("n", *METRICS), path),
        "calibration": _rows(raw, "calibration", ("model", "nominal", "observed"), ("nominal", "observed"), path),
        "gaps": _rows(raw, "gaps", ("model", "reference"), GAP_FIELDS, path) if "gaps" in raw else [],
        "per_cell": _rows(raw, "per_cell", ("cell", "model"), ("n", *METRICS), path) if "per_cell" in raw else [],
        "overall_3bits": (_rows(raw, "overall_3bits", ("model",), ("n", *METRICS), path)
                          if "overall_3bits" in raw else []),
        "settings": settings if isinstance(settings, dict) else {"settings": settings},
    }


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise QBayesError(f"{path}: no such validation file; write one with `qbayes validate --json {path}`")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise QBayesError(f"{path}: not valid JSON ({exc})") from exc
    return parse(raw, path)
