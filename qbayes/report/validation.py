"""Reading the held-out validation results that ``qbayes validate --json PATH`` writes, for
the report and ``bench/validation_table.py``.

The file is read into a :class:`qbayes.evaluation.summary.ValidationSummary`, whose
docstring gives the shape; a file of another shape is refused with a message that names
the file and what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qbayes.errors import QBayesError
from qbayes.evaluation.summary import ValidationSummary


def load(path: str | os.PathLike) -> ValidationSummary:
    path = Path(path)
    if not path.is_file():
        raise QBayesError(f"{path}: no such validation file; write one with `qbayes validate --json {path}`")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise QBayesError(f"{path}: not valid JSON ({exc})") from exc
    return ValidationSummary.from_dict(raw, source=path)
