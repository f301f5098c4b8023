"""The HTML report of a fit: one self-contained file (inline CSS and images, no script,
no network), sections in :mod:`qbayes.report.sections`."""

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

SECTION_IDS = ("data", "convergence", "ppc", "learned", "validation", "decisions", "accuracy")


def build(
    fit: Fit,
    validation: ValidationSummary | list[ValidationSummary] | None = None,
    *,
    n_draws: int | None = None,
    seed: int = 0,
    accuracy: AccuracyFit | None = None,
) -> str:
    """The report of ``fit`` as an HTML string. ``validation`` is a ``qbayes validate
    --json`` summary (read with :mod:`qbayes.report.validation`), a list of them (one per
    scheme), or None. ``accuracy``: the accuracy fit of section 7, or None."""
    ctx = Context(fit=fit, n_draws=n_draws or DEFAULT_DRAWS, seed=seed, validation=validation, accuracy=accuracy)
    with figures.style():
        sections = [m.render(ctx) for m in SECTIONS]
    title = f"qbayes report: {fit.spec.name} fit of {fit.data.height} results"
    subtitle = (
        f"data hash {fit.info.data_hash} · spec hash {fit.spec.hash} · "
        f"posterior {fit.posterior_checksum or '?'} · "
        f"validation {'included' if validation else 'not provided'}"
    )
    return page(title, subtitle, sections)


def write(text: str, out: str | os.PathLike) -> Path:
    """Write atomically (temporary file, then rename); parents are created."""
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)
