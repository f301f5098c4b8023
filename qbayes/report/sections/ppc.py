"""Section 3: posterior predictive checks. Observed against replicated degradation (from
:meth:`qbayes.model.predict.Predictor.delta`, observation noise included) by bit width and by
method, and the calibration of the replicates: PIT of each observation within its own
posterior predictive draws; and the in-sample check by cell (qbayes.model.ppc_cells), whose
worst cells are listed."""

from __future__ import annotations

import numpy as np
import xarray as xr

from qbayes.model import ppc_cells
from qbayes.report import figures as F
from qbayes.report.context import Context, coverage_tolerance
from qbayes.report.html import Cell, Section, esc, fixed, interval, table

FLOOR = 1e-3  # log axes: degradations below this (incl. the rare exact 0) are drawn at it
CAP = 50.0  # and the axes stop here (nats): Student-t replicates can reach absurd values
TOP_METHODS = 10
CELLS_SHOWN = 12  # worst cells of the in-sample check in the table


def _groups(ctx: Context, by: str) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per bit bucket, or per method (most rows first, then 'other')."""
    if by == "bits":
        b = ctx.bits_bucket
        order = sorted(set(b), key=lambda s: (s == "?", float(s.rstrip("+")) if s != "?" else 0))
        return [(f"{s} bits", b == s) for s in order]
    meth = np.array(ctx.data.get_column("method").to_list(), dtype=object)
    counts = sorted(ctx.counts("method").items(), key=lambda kv: (-kv[1], kv[0]))
    top = [m for m, _ in counts[:TOP_METHODS]]
    out = [(m, meth == m) for m in top]
    rest = ~np.isin(meth, top)
    if rest.any():
        out.append(("other methods", rest))
    return out


def _stat_intervals(rep: np.ndarray, q: float) -> tuple[float, float, float]:
    """Quantile ``q`` of each replicated data set, summarised over draws: median, 5%, 95%."""
    with np.errstate(invalid="ignore"):
        t = np.nanquantile(rep, q, axis=1)
    return tuple(np.nanquantile(t, [0.5, 0.05, 0.95]))


def _tstat_panel(ax, ctx: Context, groups, title: str) -> None:
    rep, obs = ctx.replicated, ctx.observed
    x = np.arange(len(groups))
    for j, (q, colour, marker, label) in enumerate(
        [(0.5, F.PALETTE[0], "o", "median"), (0.9, F.PALETTE[3], "^", "90th percentile")]
    ):
        off = (j - 0.5) * 0.22
        mids, los, his, obs_t = [], [], [], []
        for _, m in groups:
            mid, lo, hi = _stat_intervals(rep[:, m], q)
            mids.append(mid), los.append(lo), his.append(hi)
            obs_t.append(np.quantile(obs[m], q))
        mids, los, his = (np.clip(np.array(v), FLOOR, None) for v in (mids, los, his))
        ax.errorbar(
            x + off,
            mids,
            yerr=[mids - los, his - mids],
            fmt="none",
            ecolor=colour,
            elinewidth=5,
            alpha=0.35,
            label=f"replicated {label} (90% interval)",
        )
        ax.scatter(
            x + off,
            np.clip(obs_t, FLOOR, None),
            color="black",
            marker=marker,
            s=22,
            zorder=3,
            label=f"observed {label}",
        )
    ax.set_xticks(
        x,
        [F.plain(f"{g}\n(n={int(m.sum())})") for g, m in groups],
        rotation=0 if len(groups) < 8 else 35,
        ha="center" if len(groups) < 8 else "right",
    )
    F.plain_log(ax, "y")
    ax.set_ylim(top=min(ax.get_ylim()[1], CAP))
    ax.set_ylabel("degradation Δ (nats)")
    ax.set_title(title)


def _tstat_figure(ctx: Context) -> str:
    fig = F.new_figure(11, 4.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.7])
    _tstat_panel(ax1, ctx, _groups(ctx, "bits"), "by weight bit width")
    _tstat_panel(ax2, ctx, _groups(ctx, "method"), "by method")
    ax1.legend(loc="lower left", frameon=False, fontsize=7)
    return F.figure(
        fig,
        "Observed against replicated degradation by bit width and by method",
        "Black marks: the median (circles) and 90th percentile (triangles) of the observed degradations "
        "in each group. Bars: where the same statistic falls across data sets replicated from the "
        "posterior predictive (90% interval). A black mark outside its bar is a misfit.",
    )


def _scatter_figure(ctx: Context) -> str:
    rep, obs = ctx.replicated, ctx.observed
    med = np.nanmedian(rep, axis=0)
    lo, hi = np.nanquantile(rep, [0.05, 0.95], axis=0)
    fig = F.new_figure(11, 4.6)
    ax = fig.add_subplot()
    buckets = ctx.bits_bucket
    labels = sorted(set(buckets), key=lambda s: float(s.rstrip("+")) if s != "?" else 99)
    for i, b in enumerate(labels):
        m = buckets == b
        colour = F.PALETTE[i % len(F.PALETTE)]
        y = np.clip(med[m], FLOOR, None)
        ax.vlines(
            np.clip(obs[m], FLOOR, None),
            np.clip(lo[m], FLOOR, None),
            np.clip(hi[m], FLOOR, None),
            color=colour,
            alpha=0.18,
            linewidth=0.8,
        )
        ax.scatter(np.clip(obs[m], FLOOR, None), y, s=8, color=colour, label=f"{b} bits", linewidths=0, alpha=0.8)
    lim = [FLOOR, max(np.nanmax(obs), 1.0) * 1.5]
    ax.plot(lim, lim, color="black", linewidth=0.8, linestyle="--")
    F.plain_log(ax, "x"), F.plain_log(ax, "y")
    ax.set_xlim(lim), ax.set_ylim(FLOOR, max(lim[1], CAP))  # heavy-tailed intervals run off the top
    ax.set_xlabel("observed degradation Δ (nats)")
    ax.set_ylabel("posterior predictive median (90% interval)")
    ax.legend(frameon=False, ncols=2, loc="upper left")
    return F.figure(
        fig,
        "Observed degradation against the posterior predictive median, per training row",
        "Each point is one training row; the vertical line is its 90% posterior predictive interval. "
        "Points on the dashed diagonal are predicted exactly.",
    )


def _pit_ecdf(ctx: Context) -> str:
    import arviz_plots as azp

    name = "Δ, all training rows"
    rep = np.where(np.isfinite(ctx.replicated), ctx.replicated, np.nanmax(ctx.observed) * 10)
    tree = xr.DataTree.from_dict(
        {
            "posterior_predictive": xr.Dataset({name: (("chain", "draw", "row"), rep[None])}),
            "observed_data": xr.Dataset({name: (("row",), ctx.observed)}),
        }
    )
    pc = azp.plot_ppc_pit(tree, backend="matplotlib", figure_kwargs={"figsize": (5.2, 3.4), "layout": "constrained"})
    return F.img(pc.viz["figure"].item(), "PIT Δ-ECDF of the observations within their posterior predictive draws")


def _pit_hist(ctx: Context) -> str:
    pit = ctx.pit
    fig = F.new_figure(5.2, 3.4)
    ax = fig.add_subplot()
    bins = 20
    ax.hist(pit, bins=bins, range=(0, 1), color=F.PALETTE[0], alpha=0.75, edgecolor="white")
    expected = len(pit) / bins
    band = 2 * np.sqrt(expected * (1 - 1 / bins))
    ax.axhspan(expected - band, expected + band, color="grey", alpha=0.2, linewidth=0)
    ax.axhline(expected, color="black", linewidth=0.8)
    ax.set_xlabel("PIT: share of replicates below the observation")
    ax.set_ylabel("rows")
    ax.set_title("PIT histogram")
    return F.img(fig, "PIT histogram of the observations within their posterior predictive draws")


def _coverage_cell(share: float, nominal: float, n: int) -> Cell:
    """Coverage, red when further from nominal than :func:`coverage_tolerance` allows."""
    tol = coverage_tolerance(nominal, n)
    return Cell(
        fixed(share, 2),
        "num bad" if abs(share - nominal) > tol else "num",
        f"nominal {nominal:.2f}; flagged beyond ±{tol:.2f}",
    )


def _table(ctx: Context, by: str) -> str:
    rep, obs, pit = ctx.replicated, ctx.observed, ctx.pit
    lo50, hi50, lo90, hi90 = np.nanquantile(rep, [0.25, 0.75, 0.05, 0.95], axis=0)
    in50 = (obs >= lo50) & (obs <= hi50)
    in90 = (obs >= lo90) & (obs <= hi90)
    rows = []
    for label, m in _groups(ctx, by) + [("all rows", np.ones_like(obs, dtype=bool))]:
        mid, lo, hi = _stat_intervals(rep[:, m], 0.5)
        c50, c90 = in50[m].mean(), in90[m].mean()
        rows.append(
            [
                label,
                int(m.sum()),
                float(np.median(obs[m])),
                Cell(interval(mid, lo, hi), "num"),
                _coverage_cell(c50, 0.5, int(m.sum())),
                _coverage_cell(c90, 0.9, int(m.sum())),
                Cell(fixed(pit[m].mean(), 2), "num"),
            ]
        )
    return table(
        [
            "group",
            "rows",
            "observed median Δ",
            "replicated median Δ [90%]",
            "in 50% interval (0.50)",
            "in 90% interval (0.90)",
            "mean PIT (0.5 ideal)",
        ],
        rows,
    )


def _cells_table(ctx: Context) -> str:
    """The in-sample check: a verdict line and the worst cells."""
    check = ppc_cells.check_cells(ctx.fit, n_draws=ctx.n_draws, seed=ctx.seed)
    verdict = "passes" if check.ok else f"<b>fails in {len(check.failed)} cells</b>"
    rows = [
        [
            c.label,
            c.rows,
            float(c.observed_median),
            float(c.predicted_median),
            Cell(fixed(c.coverage, 2), "num" if c.covered else "num bad", f"at least {ppc_cells.COVERAGE_MIN}"),
            Cell(fixed(c.bias, 2), "num" if c.centred else "num bad", f"within ±{c.spread:.2f}, the cell's spread"),
            "pass" if c.ok else "fail",
        ]
        for c in check.cells[:CELLS_SHOWN]
    ]
    head = (
        f"<p>{esc(check.summary())}: the check {verdict}. Each cell is one family, method, bit width and grouping "
        f"with at least {ppc_cells.MIN_ROWS} training rows; its rows must fall inside their 90% predictive "
        "intervals at least "
        f"{ppc_cells.COVERAGE_MIN:.0%} of the time, and the median error of their predicted medians (on "
        "ln(Δ + shift)) must stay within the cell's spread (the larger of its rows' scatter and their "
        f"predictive 50% half-width). The {min(CELLS_SHOWN, len(check.cells))} worst cells:</p>"
    )
    return head + table(
        [
            "cell",
            "rows",
            "observed median Δ",
            "predicted median Δ",
            "in 90% interval",
            "median error (log)",
            "verdict",
        ],
        rows,
    )


def render(ctx: Context) -> Section:
    body = (
        "<p>Replicated data sets are drawn from the posterior predictive distribution of every training row "
        f"({ctx.replicated.shape[0]} posterior draws, observation noise included). These checks are "
        "<b>in-sample</b>: the rows were used to fit, so they show whether the model can reproduce its data, "
        "not how well it predicts a new family (section 5 does that).</p>"
        + F.safe("the scatter of observed against predicted", _scatter_figure, ctx)
        + F.safe("the test-statistic checks", _tstat_figure, ctx)
        + "<h3>Calibration of the posterior predictive</h3>"
        "<p>If the model is calibrated, each observation is a random draw from its own predictive "
        "distribution, so its PIT (the share of replicates below it) is uniform: the Δ-ECDF stays in its "
        "band and the histogram is flat. A U shape means intervals too narrow; a hump, too wide; a slope, bias. "
        "This is the posterior-predictive PIT, not LOO-PIT: the fit file stores no pointwise "
        "log-likelihood, and a PIT computed with the observation in the fit is slightly optimistic.</p>"
        + '<div class="grid"><figure>'
        + F.safe("the PIT ECDF", _pit_ecdf, ctx)
        + "</figure><figure>"
        + F.safe("the PIT histogram", _pit_hist, ctx)
        + "</figure></div>"
        + "<h3>In-sample check by cell</h3>"
        + F.safe("the in-sample check by cell", _cells_table, ctx)
        + "<h3>By bit width</h3>"
        + F.safe("the table by bits", _table, ctx, "bits")
        + "<h3>By method</h3>"
        + F.safe("the table by method", _table, ctx, "method")
    )
    return Section("ppc", "3. Posterior predictive checks", body)
