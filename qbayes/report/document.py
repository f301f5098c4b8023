"""The HTML report of a fit as one self-contained file (inline CSS and images, no script,
no network), from the sections in :mod:`qbayes.report.sections`."""

from __future__ import annotations

import os
from pathlib import Path

from qbayes.atomic import atomic_path
from qbayes.evaluation.summary import ValidationSummary
from qbayes.model.accuracy.fitfile import AccuracyFit
from qbayes.model.fitfile import Fit
from qbayes.report import figures
from qbayes.report.context import DEFAULT_DRAWS, Context
from qbayes.report.html import page
from qbayes.report.sections import SECTIONS

SECTION_IDS = ("summary", "data", "convergence", "ppc", "learned", "validation", "decisions", "accuracy")


def build(
    fit: Fit,
    validation: ValidationSummary | list[ValidationSummary] | None = None,
    *,
    n_draws: int | None = None,
    seed: int = 0,
    scenario: str | None = None,
    accuracy: AccuracyFit | None = None,
) -> str:
    """The report of ``fit`` as an HTML string. ``validation`` is a ``qbayes validate
    --json`` summary (read with :mod:`qbayes.report.validation`), a list of them (one per
    scheme), or None; ``scenario`` the family of the decisions (default: the one with the
    most rows); ``accuracy`` the accuracy fit of the task-accuracy section, or None."""
    ctx = Context(
        fit=fit,
        n_draws=n_draws or DEFAULT_DRAWS,
        seed=seed,
        validation=validation,
        scenario=scenario,
        accuracy=accuracy,
    )
    with figures.style():
        sections = [m.render(ctx) for m in SECTIONS]
    title = f"qbayes report: {fit.spec.name} fit of {fit.data.height} results"
    families = fit.data.get_column("family").n_unique()
    subtitle = (
        f"{families} families, {fit.data.height} measured results; "
        f"validation {'included' if validation else 'not provided'}. What it can answer first, then the statistics."
    )
    return page(title, subtitle, sections)


def write(text: str, out: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename); parents are created."""
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)
