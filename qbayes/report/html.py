"""HTML building blocks: escaping, number formatting, tables and the page template.

Everything that comes from data (family, model, method, source names, attribute values)
goes through :func:`esc`; the helpers here escape every cell, so a section only writes
raw HTML for its own markup. The page carries its CSS inline and a Content-Security-Policy
that forbids every fetch except ``data:`` images, so it opens offline and, even if a
reference slipped in, the browser would not request it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --bad:#fde2e1; --badfg:#9b1c1c;
        --ok:#e3f4e6; --okfg:#1f6b33; --warn:#fff4d6; --accent:#2f5f9e; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 12px 28px 60px; background: #fff; }
header.top { border-bottom: 3px solid var(--accent); margin-bottom: 8px; }
h1 { font-size: 1.6em; margin: 18px 0 4px; }
h2 { font-size: 1.3em; margin: 34px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p, li { max-width: 70em; }
.muted { color: var(--muted); }
nav.toc { font-size: .95em; margin: 6px 0 14px; }
nav.toc a { margin-right: 14px; color: var(--accent); text-decoration: none; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .92em; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: .9em; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.bad { background: var(--bad); color: var(--badfg); font-weight: 600; }
td.ok { color: var(--okfg); }
td.best { font-weight: 700; }
.banner { padding: 8px 12px; border-radius: 4px; margin: 8px 0 12px; }
.banner.ok { background: var(--ok); color: var(--okfg); }
.banner.bad { background: var(--bad); color: var(--badfg); }
.banner.note { background: var(--warn); }
.grid { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eceef2; }
figcaption { color: var(--muted); font-size: .9em; max-width: 70em; }
details { margin: 6px 0 12px; }
summary { cursor: pointer; color: var(--accent); }
.kv th { width: 13em; }
"""


def esc(value) -> str:
    """Text from data, safe inside HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant digits, '—' for missing."""
    if is_missing(x):
        return "—"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1e6 or ax < 1e-4:
        return f"{x:.{max(digits - 1, 0)}e}"
    if ax >= 10 ** (digits - 1):
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fixed(x, decimals: int = 2) -> str:
    return "—" if is_missing(x) else f"{float(x):.{decimals}f}"


def interval(mid, lo, hi, digits: int = 3) -> str:
    """'mid [lo, hi]' for a point estimate with an interval."""
    if is_missing(mid):
        return "—"
    return f"{num(mid, digits)} [{num(lo, digits)}, {num(hi, digits)}]"


@dataclass(frozen=True)
class Cell:
    """A table cell with optional CSS class (``num``, ``bad``, ``best``...) and a tooltip;
    all three are escaped when rendered."""

    text: str = ""
    cls: str = ""
    title: str = ""

    def render(self, tag: str = "td") -> str:
        attrs = f' class="{esc(self.cls)}"' if self.cls else ""
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        return f"<{tag}{attrs}>{esc(self.text)}</{tag}>"


def _cell(value) -> Cell:
    if isinstance(value, Cell):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Cell(num(value), "num")
    return Cell("" if value is None else str(value))


def table(headers: Sequence, rows: Iterable[Sequence], *, cls: str = "", caption: str = "") -> str:
    """An HTML table; every header and cell is escaped (numbers right-aligned)."""
    head = "".join(_cell(h).render("th") for h in headers)
    body = "".join("<tr>" + "".join(_cell(v).render() for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{cls_attr}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column key/value table."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def para(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def details(summary_text: str, body: str) -> str:
    return f"<details><summary>{esc(summary_text)}</summary>{body}</details>"


def banner(text: str, kind: str = "note") -> str:
    return f'<div class="banner {esc(kind)}">{esc(text)}</div>'


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str  # trusted HTML built with the helpers above


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole self-contained document."""
    toc = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body><main><header class="top"><h1>{esc(title)}</h1>'
        f'<p class="muted">{esc(subtitle)}</p><nav class="toc">{toc}</nav></header>'
        f"{parts}</main></body></html>\n"
    )
