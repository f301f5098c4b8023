"""Values made safe for strict JSON (``json.dumps(..., allow_nan=False)``).

Results written as JSON (validation summaries, the zoo analysis) hold NumPy scalars and
arrays and, where a score is undefined, NaN; strict JSON has neither, so NaN and
infinities become ``null`` and NumPy values become plain Python ones.
"""

from __future__ import annotations

import math

import numpy as np


def json_safe(x):
    """Plain Python values for JSON: numpy scalars unwrapped, NaN/inf -> None, keys as str."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return [json_safe(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x
