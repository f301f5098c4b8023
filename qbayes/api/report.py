"""``qbayes.write_report``: the self-contained HTML report of a fit, the work behind
``qbayes report`` (which names the fit it loads and the file it wrote). Not
``qbayes.report``: that is the package that draws the report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qbayes import resources
from qbayes.api import checks
from qbayes.api.model import Model, load
from qbayes.api.validate import Validation
from qbayes.evaluation.summary import ValidationSummary
from qbayes.model.accuracy import fitfile as accuracy_fitfile
from qbayes.report import document
from qbayes.report import validation as validation_file
from qbayes.report.context import DEFAULT_DRAWS
from qbayes.report.decisions import scenario as read_scenario

DEFAULT_OUT = "reports/report.html"


def write_report(
    model: Model | str | os.PathLike | None = None,
    *,
    out: str | os.PathLike = DEFAULT_OUT,
    validation: Sequence[Validation | ValidationSummary | str | os.PathLike] = (),
    draws: int = DEFAULT_DRAWS,
    scenario: str | None = None,
    seed: int = 0,
    accuracy_path: str | os.PathLike | None = None,
) -> Path:
    """Write the HTML report of a fit to ``out`` and return its path, as ``qbayes report``
    does: data, convergence, posterior predictive checks (``draws`` posterior draws, chosen
    with ``seed``), what the model learned, held-out validation and decisions for the
    models of family ``scenario`` (default: the family with the most rows).

    ``model``: a `Model` (`load`), a fit file, or None for the shipped posterior;
    ``validation``: results of `qbayes.validate` or the JSON files ``qbayes validate --json``
    wrote (one per scheme); ``accuracy_path``: the accuracy fit of the task-accuracy
    section (default: the model's, else the shipped one). The file has its images inline
    and makes no network request.

    Examples:
        >>> path = qbayes.write_report(out="report.html")  # doctest: +SKIP
        >>> path.stat().st_size > 0  # doctest: +SKIP
        True
    """
    if model is None or not isinstance(model, Model):
        model = load(None if model is None else checks.path("model", model))
    draws = checks.integer("draws", draws, 50)
    out = checks.path("out", out)
    if isinstance(validation, (str, os.PathLike, Validation, ValidationSummary)):
        validation = [validation]
    summaries = [_summary(v) for v in validation] or None
    if scenario is not None:
        read_scenario(model.fit, scenario)  # refuses a family the data lack before the work starts
    acc_path = accuracy_path or model.accuracy_path or resources.shipped_accuracy_fit()
    accuracy = accuracy_fitfile.load(acc_path) if acc_path is not None else None
    html = document.build(
        model.fit, summaries, n_draws=draws, seed=checks.integer("seed", seed), scenario=scenario, accuracy=accuracy
    )
    return document.write(html, out)


def _summary(v) -> ValidationSummary:
    """One validation given to `report`, as the record the report reads."""
    if isinstance(v, Validation):
        return v.summary
    if isinstance(v, ValidationSummary):
        return v
    return validation_file.load(checks.path("validation", v))
