"""``qbayes.write_report`` writes the report ``qbayes report`` writes, from the same fit and
validation files (the session's report, tests/report/conftest.py, is the command's)."""

from __future__ import annotations

import re

import qbayes

from report_fixtures import VALIDATION_JSON


def _parts(html: str) -> tuple[list[str], list[str]]:
    """The section headings and the tables (the figures' SVG carry ids of their own)."""
    return re.findall(r"<h2[^>]*>(.*?)</h2>", html), re.findall(r"<table.*?</table>", html, re.S)


def test_python_writes_the_report_the_command_line_writes(tiny_fit_path, report_path, report_html, tmp_path):
    forward = report_path.parent.parent / "validation-forward.json"  # the fixture's forward-scheme file
    out = tmp_path / "deep" / "py.html"
    path = qbayes.write_report(qbayes.load(tiny_fit_path), out=out, validation=[VALIDATION_JSON, forward], draws=200)
    assert path == out
    headings, tables = _parts(out.read_text(encoding="utf-8"))
    assert (headings, tables) == _parts(report_html)
    assert len(headings) >= 5 and len(tables) > 0
