"""The HTML report: every section present, names escaped, self-contained (no reference
that could make a request), small, and the pieces that can go wrong on their own."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.predict import Predictor
from qbayes.report.document import SECTION_IDS

from report_fixtures import EVIL_FAMILY, VALIDATION_JSON

HEADINGS = (
    "What this fit can answer",
    "1. Data",
    "2. Convergence",
    "3. Posterior predictive checks",
    "4. What the model learned",
    "5. Held-out validation",
    "6. Decisions",
    "7. What a degradation costs on tasks",
)
# Anything that could make a browser fetch: attributes that load (checked by value
# below), CSS url()/@import, element kinds that load by themselves. (A web address as
# plain text, say a source named by its URL, is harmless and allowed.)
LOADING_ATTR = re.compile(
    r"""(?i)\b(src|href|action|poster|data|srcset|formaction|background)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)"""
)
NETWORK_REFS = [
    re.compile(r"(?i)url\s*\("),
    re.compile(r"(?i)@import"),
    re.compile(
        r"(?i)<\s*(?:script|link|iframe|frame|object|embed|video|audio|source|track|base|meta\s+http-equiv=.?refresh)\b"
    ),
]


def test_every_section_is_there(report_html):
    for sid, heading in zip(SECTION_IDS, HEADINGS):
        assert f'<section id="{sid}"><h2>{heading}</h2>' in report_html
        assert f'href="#{sid}"' in report_html
    assert "Could not draw" not in report_html, "a figure or table failed to render"


def test_names_from_data_are_escaped(report_html):
    assert EVIL_FAMILY not in report_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report_html
    assert "<b>bold</b>" not in report_html
    assert "Odd $x$ &amp; &lt;b&gt;bold&lt;/b&gt;" in report_html
    assert not re.search(r"(?i)<script", report_html)


def test_report_is_self_contained_and_small(report_html, report_path):
    for m in LOADING_ATTR.finditer(report_html):
        value = m.group(2).strip("\"'")
        assert value.startswith(("data:image/png;base64,", "#")), f"loading attribute: {m.group(0)[:120]!r}"
    for pattern in NETWORK_REFS:
        m = pattern.search(report_html)
        assert m is None, f"possible external reference: {report_html[max(m.start() - 60, 0) : m.end() + 60]!r}"
    assert "Content-Security-Policy" in report_html and "default-src 'none'" in report_html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report_html)
    assert len(images) >= 12
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert report_path.stat().st_size < 2_000_000


def test_report_content(report_html):
    # convergence thresholds are shown; the tiny fit (2 x 100 draws) must fail ESS and say so
    assert "R-hat (≤ 1.01)" in report_html and "bulk ESS (≥ 400)" in report_html
    assert "Convergence checks FAIL" in report_html
    # the published constants sit next to the fitted exponents
    assert "arXiv 2411.04330" in report_html and ">0.34<" in report_html and ">0.51<" in report_html
    # validation section from the fixture: every baseline is listed, once per scheme, and the
    # forward file's scores over rows of 3 or more bits have their own table
    for model in json.loads(VALIDATION_JSON.read_text())["models"]:
        assert report_html.count(f">{model}<") >= 2
    assert "<h3>Leave one family out</h3>" in report_html
    assert "<h3>Forward: each family from the families released before it</h3>" in report_html
    assert report_html.count("<h4>Rows of 3 or more bits</h4>") == 1 and ">0.0123<" in report_html
    assert "budget (GB)" in report_html and "P(runner-up within 1%)" in report_html
    # the noise scale and what each of the default model's noise terms multiplies it by
    assert "Observation noise" in report_html and "× scale at 2 bits" in report_html
    assert "× scale per channel" in report_html and "Student-t degrees of freedom" in report_html


def test_validation_absent_says_how_to_make_it(tiny_fit):
    from qbayes.report.context import Context
    from qbayes.report.sections import validation

    sec = validation.render(Context(fit=tiny_fit))
    assert sec.id == "validation"
    assert "not provided" in sec.body and "qbayes validate --json" in sec.body


def test_validation_file_is_checked(tmp_path):
    from qbayes.evaluation.summary import ValidationSummary
    from qbayes.report import validation

    good = json.loads(VALIDATION_JSON.read_text())
    parsed = ValidationSummary.from_dict(good)
    assert math.isnan(next(r for r in parsed.overall if r.model == "cell_median").scores.cov90)
    nan_text = tmp_path / "nan.json"
    nan_text.write_text(json.dumps({**good, "overall": [{"model": "x", "n": 3, "mdae": float("nan")}]}))
    assert math.isnan(validation.load(nan_text).overall[0].scores.mdae)
    with pytest.raises(QBayesError, match="missing calibration"):
        ValidationSummary.from_dict({k: v for k, v in good.items() if k != "calibration"})
    with pytest.raises(QBayesError, match=r"overall\[0\]\.mdae"):
        ValidationSummary.from_dict({**good, "overall": [{"model": "x", "mdae": "small"}]})
    with pytest.raises(QBayesError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{")
        validation.load(tmp_path / "bad.json")


def test_cli_errors_are_one_clear_line(cli, tmp_path, tiny_fit_path):
    r = cli("report", "--fit", tmp_path / "absent.nc", "--out", tmp_path / "x.html")
    assert r.code == 2 and "no such fit file" in r.err
    r = cli("report", "--fit", tiny_fit_path, "--validation", tmp_path / "absent.json", "--out", tmp_path / "x.html")
    assert r.code == 2 and "qbayes validate --json" in r.err
    r = cli("report", "--fit", tiny_fit_path, "--scenario", "Nosuchfamily", "--out", tmp_path / "x.html")
    assert r.code == 2 and "not a family of the fit's data" in r.err
    assert not (tmp_path / "x.html").exists()


def test_report_opens_on_what_the_fit_answers(report_html, tiny_fit):
    summary = report_html.index('<section id="summary">')
    assert summary < report_html.index('<section id="data">')
    first = report_html[summary : report_html.index('<section id="data">')]
    assert "Families" in first and "held-out results" in first and "A model you may know" in first
    assert "data hash" not in report_html[:summary]  # hashes no longer open the page


def test_fixed_parameters_are_shown_as_fixed_without_warnings(tiny_fit):
    import warnings

    from qbayes.model import diagnostics as D
    from qbayes.report.context import Context
    from qbayes.report.sections import convergence

    post = tiny_fit.posterior
    fixed = convergence.fixed_params(post, convergence.top_level(post))
    assert fixed, "the default spec fixes the spreads of its effects"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # arviz-stats' 0/0 on a constant
        html = convergence._param_table(Context(fit=tiny_fit), D.check(tiny_fit.tree))
    row = html[html.index(f">{fixed[0]}<") :]
    row = row[: row.index("</tr>")]
    assert "fixed" in row and "bad" not in row


def test_decision_frontier_respects_budgets(tiny_fit):
    from qbayes.report import decisions as dec

    sc = dec.scenario(tiny_fit)
    assert sc.family in tiny_fit.encoding.levels["family"]
    # the scenario's sizes are the family's real models, with their measured fp16 perplexity
    own = tiny_fit.data.filter(pl.col("family") == sc.family)
    assert set(sc.frontier_sizes) == set(own["params_b"].to_list())
    for size, ppl in sc.measured.items():
        assert ppl in own.filter(pl.col("params_b") == size)["fp16_ppl"].to_list() or ppl == pytest.approx(
            float(own.filter(pl.col("params_b") == size)["fp16_ppl"].median())
        )
    odd = [1234.5, 0.0123]  # sizes no model has: the trend
    assert np.allclose(np.log(sc.fp16_ppl(odd)), sc.ppl_a + sc.ppl_b * np.log(odd))
    fr = dec.frontier(Predictor(tiny_fit, n_draws=100, seed=0), sc)
    opts = fr.options.to_dicts()
    assert len(opts) == len(sc.frontier_sizes) * (len(dec.FRONTIER_BITS) + 1)
    for c in fr.choices.iter_rows(named=True):
        if c["best"] is None:
            assert all(o["memory_gb"] > c["budget_gb"] for o in opts)
            continue
        best = opts[c["best"]]
        feasible = [o for o in opts if o["memory_gb"] <= c["budget_gb"]]
        assert best["memory_gb"] <= c["budget_gb"]
        assert best["ppl_q50"] == min(o["ppl_q50"] for o in feasible)
        assert 0.0 <= c["p_best"] <= 1.0
        if c["runner_up"] is not None:
            assert 0.0 <= c["p_runner_up_within"] <= 1.0
    p = dec.pareto(fr.options)
    assert np.all(np.diff(p["ppl_q50"].to_numpy()) < 0)


def test_html_helpers_escape_and_format():
    from qbayes.report.html import Cell, num, table

    t = table(["<h>"], [["<td>"], [Cell("<i>x</i>", "num")], [float("nan")], [1234.5]])
    assert "<h>" not in t and "&lt;h&gt;" in t and "&lt;i&gt;x&lt;/i&gt;" in t
    assert "—" in t and re.search(r">123[45]<", t)
    assert num(0.012345) == "0.0123" and num(None) == "—" and num(float("inf")) == "∞"


# one row of a validation file's "gaps" (see qbayes.evaluation.summary.MdaeGap)
GAP = {
    "model": "random_forest",
    "reference": "hierarchical",
    "n": 1177,
    "gap": 0.0068,
    "lo": 0.0021,
    "hi": 0.0115,
    "level": 0.9,
    "p_reference_better": 0.01,
}


def test_validation_gaps_are_optional_and_shown(tiny_fit):
    from qbayes.evaluation.summary import ValidationSummary
    from qbayes.report.context import Context
    from qbayes.report.sections import validation as section

    good = json.loads(VALIDATION_JSON.read_text())
    parse = ValidationSummary.from_dict
    assert parse(good).gaps == ()  # files written before gaps existed still load
    assert "against each model" not in section.render(Context(fit=tiny_fit, validation=parse(good))).body
    body = section.render(Context(fit=tiny_fit, validation=parse({**good, "gaps": [GAP]}))).body
    assert "Median error of hierarchical against each model" in body
    assert "+0.0068" in body and "[+0.0021, +0.0115]" in body
    with pytest.raises(QBayesError, match=r"gaps\[0\]\.lo"):
        parse({**good, "gaps": [{**GAP, "lo": "low"}]})


def test_report_refuses_a_validation_file_with_a_bad_gap(cli, tmp_path, tiny_fit_path):
    """A gaps row with a non-number is refused by field name, and no report is written."""
    good = json.loads(VALIDATION_JSON.read_text())
    bad = tmp_path / "bad-gaps.json"
    bad.write_text(json.dumps({**good, "gaps": [{**GAP, "lo": "low"}]}))
    out = tmp_path / "x.html"
    r = cli("report", "--fit", tiny_fit_path, "--validation", bad, "--out", out)
    assert r.code == 2 and "gaps[0].lo: expected a number or null, got 'low'" in r.err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad-gaps.json"]


def _cell_row(cell: str, model: str, mdae: float, cov90: float) -> dict:
    return {
        "cell": cell,
        "model": model,
        "n": 40,
        "mdae": mdae,
        "mae": 2 * mdae,
        "cov50": 0.5,
        "cov90": cov90,
        "crps": mdae,
    }


def test_validation_per_kind_of_row_is_optional_and_shown(tiny_fit):
    from qbayes.evaluation.summary import ValidationSummary
    from qbayes.report.context import Context
    from qbayes.report.sections import validation as section

    good = json.loads(VALIDATION_JSON.read_text())
    parse = ValidationSummary.from_dict
    assert parse(good).per_cell == ()  # files written before per_cell existed still load
    old = section.render(Context(fit=tiny_fit, validation=parse(good))).body
    assert "no per-kind scores" in old and "rerun it" in old
    cells = [
        _cell_row("3 bits, groups", "hierarchical", 0.041, 0.93),
        _cell_row("3 bits, groups", "random_forest", 0.029, 0.41),
        _cell_row("4 bits, per channel", "hierarchical", 0.017, 0.95),
        _cell_row("4 bits, per channel", "random_forest", 0.025, 0.60),
    ]
    body = section.render(Context(fit=tiny_fit, validation=parse({**good, "per_cell": cells}))).body
    part = body[body.index("Per kind of row: median absolute error") :]
    assert "no per-kind scores" not in body
    # kinds in the file's order, the best error of each kind in bold
    assert part.index("3 bits, groups") < part.index("4 bits, per channel")
    assert '<td class="num best">0.029</td>' in part and '<td class="num best">0.017</td>' in part
    assert "Per kind of row: 90% interval coverage" in part
    with pytest.raises(QBayesError, match=r"per_cell\[1\]\.mdae"):
        parse({**good, "per_cell": [cells[0], {**cells[1], "mdae": "small"}]})


def test_summary_gives_the_fits_own_model_held_out_error():
    from qbayes.report import validation
    from qbayes.report.html import num
    from qbayes.report.sections.summary import validation_text

    summary = validation.load(VALIDATION_JSON)
    last = summary.overall[-1]  # not the first validated: the sentence must pick it by name
    text = validation_text(summary, last.model)
    assert f"the {last.model} model's median error is {num(last.scores.mdae)}" in text
    assert f"cover {last.scores.cov90:.0%}" in text
    assert "qbayes validate --json" in validation_text(None, last.model)
