"""Forest plots of partially pooled grouping effects, drawn in plain matplotlib so each
level can carry its row count and each panel the fitted population spread (the pooling)."""

from __future__ import annotations

import numpy as np

from qbayes.report import figures as F

KINDS = {
    "a": ("intercept", "effect on log Δ"),
    "b": ("bits slope", "change of the per-bit decay rate"),
    "c": ("per-channel shift", "extra log Δ, per-channel scales"),
    "n": ("size slope", "change of the ln N exponent"),
    "q": ("curvature", "change of the acceleration below 4 bits"),
    "r": ("activation slope", "extra log Δ per activation bit below 8"),
    "u": ("activation shift", "shift of the activation term's log"),
    "s": ("noise-scale shift", "change of ln(noise scale) on its rows"),
}
MAX_LABEL = 30


def short(label: str, n: int = MAX_LABEL) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def quantiles(x: np.ndarray, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> np.ndarray:
    """Quantiles over the sample axes (chain, draw) of an array (chain, draw, level)."""
    flat = x.reshape(-1, *x.shape[2:])
    return np.quantile(flat, qs, axis=0)


def forest(post, grouping: str, kinds: list[str], counts: dict[str, int], *, order=None):
    """A figure with one panel per effect kind (``a``, ``b``, ``c``, ``n``, ``q``, ``r``) of ``grouping``.
    Returns (figure, level order)."""
    levels = [str(v) for v in post[f"{kinds[0]}_{grouping}"].coords[grouping].values]
    if order is None:
        med = quantiles(post[f"{kinds[0]}_{grouping}"].values)[2]
        order = list(np.argsort(-med))
    n = len(levels)
    fig = F.new_figure(min(3.6 * len(kinds) + 2.4, 11), 1.1 + 0.24 * n)
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    y = np.arange(n)[::-1]
    for ax, k in zip(axes, kinds):
        q = quantiles(post[f"{k}_{grouping}"].values)[:, order]
        sd_name = f"sd_{k}_{grouping}"
        if sd_name in post:
            sd = np.quantile(post[sd_name].values, [0.5, 0.05, 0.95])
            ax.axvspan(-sd[0], sd[0], color="#d8e3f0", alpha=0.7, linewidth=0)
            ax.set_title(f"{KINDS[k][0]}\nsd {sd[0]:.2f} [{sd[1]:.2f}, {sd[2]:.2f}]")
        else:
            ax.set_title(KINDS[k][0])
        ax.axvline(0, color="black", linewidth=0.7)
        ax.hlines(y, q[0], q[4], color=F.PALETTE[0], linewidth=1.0)
        ax.hlines(y, q[1], q[3], color=F.PALETTE[0], linewidth=3.2)
        ax.plot(q[2], y, "o", color="white", markeredgecolor=F.PALETTE[0], markersize=4.5)
        ax.set_xlabel(KINDS[k][1])
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y, [F.plain(f"{short(levels[i])} (n={counts.get(levels[i], 0)})") for i in order])
    axes[0].set_ylim(-0.7, n - 0.3)
    return fig, order
