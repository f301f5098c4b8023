"""Matplotlib figures as inline images: no display needed (Agg), no file on disk.

Figures are PNGs quantised to a 256-colour palette (plots have few colours, so this
loses nothing visible and keeps the page small), embedded as ``data:`` URIs. Names from
data go through :func:`plain` before matplotlib sees them, so a name with ``$`` is drawn
as text and never parsed as mathtext (which could fail or restyle the figure).
"""

from __future__ import annotations

import base64
import io
import sys
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from qbayes.report.html import esc

DPI = 96
STYLE = {
    "text.usetex": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "image.cmap": "viridis",
}
# Okabe-Ito: distinguishable for colour-blind readers.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999", "#8C564B"]


def plain(text) -> str:
    """A label from data, drawn literally: ``$`` escaped so mathtext never parses it."""
    return str(text).replace("$", r"\$")


@contextmanager
def style():
    """Report-wide matplotlib settings (restored afterwards)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure outside pyplot's global registry (nothing to close, nothing leaks)."""
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def plain_log(ax, axis: str = "y") -> None:
    """Log scale with plain tick labels (12, 20, 0.01) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def png_bytes(fig, dpi: int = DPI) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    _close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _close(fig) -> None:
    """Release a pyplot-managed figure (arviz-plots creates those); a no-op for others."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def img(fig, alt: str, *, dpi: int = DPI) -> str:
    """``<img>`` with the figure inline as base64 PNG."""
    data = base64.b64encode(png_bytes(fig, dpi)).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def figure(fig, alt: str, caption: str = "", *, dpi: int = DPI) -> str:
    """A ``<figure>`` with the inline image and an escaped caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{img(fig, alt, dpi=dpi)}{cap}</figure>"


def failed(what: str, exc: Exception) -> str:
    """What a section shows instead of a figure that could not be drawn."""
    return f'<div class="banner bad">Could not draw {esc(what)}: {esc(type(exc).__name__)}: {esc(exc)}</div>'


def safe(what: str, fn, *args, **kwargs) -> str:
    """``fn(*args)``'s HTML, or a visible error banner: one figure that fails must not
    sink the whole report (the tests assert that no banner of this kind appears)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return failed(what, exc)
