"""Section 5: held-out validation against the baselines of ``qbayes validate``, one part per
validation file and scheme (leave one family out; forward, each family from the families
released before it), and interval calibration. Absent validation: say how to make it."""

from __future__ import annotations

import json
import math

import numpy as np

from qbayes.evaluation.summary import Scores, ValidationSummary
from qbayes.report import figures as F
from qbayes.report.context import Context, coverage_tolerance
from qbayes.report.html import Cell, Section, details, esc, fixed, is_missing, kv_table, num, table

METRIC_LABELS = [
    ("n", "rows"),
    ("mdae", "MdAE (nats)"),
    ("mae", "MAE (nats)"),
    ("cov50", "50% coverage"),
    ("cov90", "90% coverage"),
    ("crps", "CRPS"),
]
LOWER_BETTER = ("mdae", "mae", "crps")
NOMINAL = {"cov50": 0.5, "cov90": 0.9}
HOW_TO = (
    "qbayes validate --json reports/validation.json",
    "qbayes validate --scheme forward --json reports/validation-forward.json",
    "qbayes report --fit FIT --validation reports/validation.json "
    "--validation reports/validation-forward.json --out reports/NAME.html",
)
SCHEME_TEXT = {
    "lofo": (
        "Leave one family out",
        "Each family in turn is left out of the fit and predicted from all the others, so these numbers "
        "measure how the model transfers to a family it has never seen.",
    ),
    "forward": (
        "Forward: each family from the families released before it",
        "Each family is predicted from a fit to the families released before it (models.released), "
        "which asks what users ask: how will the next generation quantize?",
    ),
}


def _best(scores: list[Scores], metric: str) -> float:
    vals = [v for v in (getattr(s, metric) for s in scores) if not is_missing(v)]
    if not vals:
        return math.nan
    if metric in NOMINAL:
        return min(vals, key=lambda v: abs(v - NOMINAL[metric]))
    return min(vals)


def _metric_cell(s: Scores, metric: str, best: float) -> Cell:
    v = getattr(s, metric)
    if metric == "n":
        return Cell("—" if is_missing(v) else f"{v:.0f}", "num")
    text = fixed(v, 2) if metric in NOMINAL else num(v)
    cls = "num"
    if not is_missing(v) and v == best:
        cls += " best"
    title = ""
    if metric in NOMINAL and not is_missing(v):
        tol = coverage_tolerance(NOMINAL[metric], s.n)
        title = f"nominal {NOMINAL[metric]:.2f}; flagged beyond ±{tol:.2f}"
        if abs(v - NOMINAL[metric]) > tol:
            cls += " bad"
    return Cell(text, cls, title)


def _overall_table(val: ValidationSummary, key: str = "overall") -> str:
    rows = getattr(val, key)
    best = {m: _best([r.scores for r in rows], m) for m, _ in METRIC_LABELS if m != "n"}
    out = []
    for r in rows:
        out.append(
            [Cell(r.model, "best" if r.model == "hierarchical" else "")]
            + [_metric_cell(r.scores, m, best.get(m, math.nan)) for m, _ in METRIC_LABELS]
        )
    return table(["model"] + [label for _, label in METRIC_LABELS], out)


def _gap_table(val: ValidationSummary) -> str:
    gaps = val.gaps
    if not gaps:
        return ""
    ref, level = gaps[0].reference, gaps[0].level
    rows = [
        [
            g.model,
            Cell(f"{g.gap:+.4f}", "num"),
            Cell(f"[{g.lo:+.4f}, {g.hi:+.4f}]", "num"),
            Cell(fixed(g.p_reference_better, 2), "num"),
        ]
        for g in gaps
    ]
    return (
        f"<h3>Median error of {esc(ref)} against each model</h3>"
        f"<p>MdAE of {esc(ref)} minus the other model's (negative: {esc(ref)} is better), with a "
        f"{level:.0%} interval from a paired bootstrap that resamples held-out rows within each family. "
        "The interval covers which rows of these families were published, not which families there are.</p>"
        + table(["model", "MdAE gap (nats)", f"{level:.0%} interval", f"P({ref} better)"], rows)
    )


def _pivot(val: ValidationSummary, metric: str, by: str = "family") -> str:
    """A table of ``metric``: one row per held-out family (``by`` "family", from
    ``per_family``) or per kind of row ("cell", from ``per_cell``, in the file's order), one
    column per model."""
    models = val.models
    source = val.per_family if by == "family" else val.per_cell
    keys = (
        sorted({getattr(r, by) for r in source})
        if by == "family"
        else list(dict.fromkeys(getattr(r, by) for r in source))
    )
    cell = {(getattr(r, by), r.model): r.scores for r in source}
    rows = []
    for k in keys:
        present = [cell[(k, m)] for m in models if (k, m) in cell]
        best = _best(present, metric)
        n = next((s.n for s in present if not is_missing(s.n)), math.nan)
        rows.append(
            [k, Cell("—" if is_missing(n) else f"{n:.0f}", "num")]
            + [_metric_cell(cell[(k, m)], metric, best) if (k, m) in cell else Cell("—", "num") for m in models]
        )
    return table(["held-out family" if by == "family" else "kind of row", "rows", *models], rows)


def _per_cell(val: ValidationSummary) -> str:
    if not val.per_cell:
        return (
            "<h3>Per kind of row</h3><p>This validation file has no per-kind scores (it was written before "
            "<code>qbayes validate</code> kept them); rerun it to see where each model wins and loses.</p>"
        )
    return (
        "<h3>Per kind of row: median absolute error</h3>"
        "<p>Held-out rows of all families pooled, split by nominal weight bits and by groups against one "
        "scale per output channel: where each model can be trusted, and where the overall median error "
        "is won or lost.</p>"
        + _pivot(val, "mdae", by="cell")
        + details("Per kind of row: 90% interval coverage", _pivot(val, "cov90", by="cell"))
    )


def _calibration_figure(val: ValidationSummary) -> str:
    fig = F.new_figure(5.4, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="ideal")
    drawn = 0
    for i, m in enumerate(val.models):
        pts = sorted(
            (c.nominal, c.observed)
            for c in val.calibration
            if c.model == m and not is_missing(c.observed) and not is_missing(c.nominal)
        )
        if not pts:
            continue
        x, y = np.array(pts).T
        ax.plot(
            x,
            y,
            marker="o",
            markersize=3.5,
            color=F.PALETTE[i % len(F.PALETTE)],
            label=F.plain(m),
            linewidth=2.2 if m == "hierarchical" else 1.2,
        )
        drawn += 1
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("nominal central-interval probability")
    ax.set_ylabel("observed share of held-out rows inside")
    ax.set_title("Interval calibration (held out)")
    ax.legend(frameon=False, loc="upper left")
    return F.img(fig, "Calibration: nominal against observed interval coverage on held-out families")


def _per_family_figure(val: ValidationSummary) -> str:
    fams = sorted({r.family for r in val.per_family})
    fig = F.new_figure(5.6, max(2.6, 1.2 + 0.32 * len(fams)))
    ax = fig.add_subplot()
    y = {f: i for i, f in enumerate(fams[::-1])}
    for i, m in enumerate(val.models):
        pts = [(r.scores.mdae, y[r.family]) for r in val.per_family if r.model == m and not is_missing(r.scores.mdae)]
        if not pts:
            continue
        x, yy = np.array(pts).T
        off = (i - (len(val.models) - 1) / 2) * 0.1
        ax.plot(
            np.clip(x, 1e-4, None),
            yy + off,
            "o" if m == "hierarchical" else "s",
            color=F.PALETTE[i % len(F.PALETTE)],
            markersize=5 if m == "hierarchical" else 3.5,
            label=F.plain(m),
            linestyle="none",
        )
    ax.set_yticks(list(y.values()), [F.plain(f) for f in y])
    F.plain_log(ax, "x")
    ax.set_xlabel("median absolute error of Δ (nats, log scale)")
    ax.set_title("Error per held-out family")
    fig.legend(frameon=False, fontsize=7, loc="outside lower center", ncols=3)
    return F.img(fig, "Median absolute error per held-out family and model")


def _one(val: ValidationSummary) -> str:
    """The part of the section for one validation file."""
    title, intro = SCHEME_TEXT.get(val.settings.scheme, SCHEME_TEXT["lofo"])
    three = ("<h4>Rows of 3 or more bits</h4>" + _overall_table(val, "overall_3bits")) if val.overall_3bits else ""
    return (
        f"<h3>{esc(title)}</h3>"
        f"<p>{esc(intro)} Baselines come from "
        "<code>qbayes validate</code>. Errors are on Δ (nats per token); coverage is the share of held-out rows "
        "inside the central 50% / 90% predictive interval (ideal 0.50 / 0.90; red when further off than 0.10 "
        "and than binomial noise allows). "
        "Best value per column in bold; — means the model gives no such number.</p>"
        "<h4>Overall</h4>"
        + _overall_table(val)
        + three
        + _gap_table(val)
        + '<div class="grid"><figure>'
        + F.safe("the calibration plot", _calibration_figure, val)
        + "</figure>"
        + "<figure>"
        + F.safe("the per-family errors", _per_family_figure, val)
        + "</figure></div>"
        + "<h4>Per held-out family: median absolute error</h4>"
        + _pivot(val, "mdae")
        + "<h4>Per held-out family: 90% interval coverage</h4>"
        + _pivot(val, "cov90")
        + details("Per held-out family: CRPS", _pivot(val, "crps"))
        + _per_cell(val)
        + details(
            "Validation settings",
            kv_table(
                (str(k), v if isinstance(v, (str, int, float)) else json.dumps(v))
                for k, v in val.to_dict()["settings"].items()
            ),
        )
    )


def render(ctx: Context) -> Section:
    vals = ctx.validation if isinstance(ctx.validation, list) else [ctx.validation] if ctx.validation else []
    if not vals:
        body = (
            '<div class="banner note">Held-out validation was not provided.</div>'
            "<p>To add it, run the validation (both schemes) and pass the JSON files to the report:</p>"
            f'<pre class="mono">{esc(chr(10).join(HOW_TO))}</pre>'
        )
        return Section("validation", "5. Held-out validation", body)
    return Section("validation", "5. Held-out validation", "".join(_one(v) for v in vals))
