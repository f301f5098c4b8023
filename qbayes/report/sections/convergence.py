"""Section 2: convergence. R-hat, bulk/tail ESS and MCSE per parameter (arviz-stats),
divergences and BFMI, with the thresholds of :mod:`qbayes.model.diagnostics` marked;
rank plots of the top-level parameters (arviz-plots)."""

from __future__ import annotations

import math

import numpy as np

from qbayes.model import diagnostics as D
from qbayes.model.spec import EFFECT_PREFIXES
from qbayes.report import figures as F
from qbayes.report.context import Context
from qbayes.report.html import Cell, Section, banner, esc, fixed, table


def top_level(post) -> list[str]:
    """Scalar parameters on their natural scale (no ``*_log__`` transforms)."""
    return [v for v in post.data_vars if post[v].dims == ("chain", "draw") and not v.endswith("__")]


def fixed_params(post, names: list[str]) -> list[str]:
    """Of ``names``, the parameters that the spec fixes (the same value in every draw):
    they have no R-hat or ESS to check, and arviz-stats would divide zero by zero on them."""
    return [v for v in names if np.ptp(post[v].values) == 0]


def effect_vectors(post) -> list[str]:
    return [v for v in post.data_vars if v.startswith(EFFECT_PREFIXES) and post[v].ndim == 3]


def _rhat_cell(x: float, limit: float) -> Cell:
    bad = not (x <= limit)
    return Cell(fixed(x, 3), "num bad" if bad else "num ok", f"threshold ≤ {limit}")


def _ess_cell(x: float, limit: float) -> Cell:
    bad = not (x >= limit)
    return Cell("—" if math.isnan(x) else f"{x:.0f}", "num bad" if bad else "num ok", f"threshold ≥ {limit:g}")


def _param_table(ctx: Context, conv: D.Convergence) -> str:
    import arviz_stats as azs

    post = ctx.fit.posterior
    fixed_names = fixed_params(post, top_level(post))
    names = [v for v in top_level(post) if v not in fixed_names]
    s = azs.summary(ctx.fit.tree, var_names=names, kind="all", ci_prob=0.9, ci_kind="eti", round_to=None)
    rows = []
    for name, r in s.iterrows():
        rows.append(
            [
                Cell(name, "mono"),
                r["mean"],
                r["sd"],
                r["eti90_lb"],
                r["eti90_ub"],
                _rhat_cell(r["r_hat"], conv.rhat_max),
                _ess_cell(r["ess_bulk"], conv.ess_min),
                _ess_cell(r["ess_tail"], conv.ess_min),
                r["mcse_mean"],
                r["mcse_sd"],
            ]
        )
    for name in fixed_names:
        value = float(post[name].values.flat[0])
        rows.append(
            [Cell(name, "mono"), value, 0.0, value, value]
            + [Cell("fixed", "num", "fixed by the spec, not sampled: nothing to converge")] * 3
            + [None, None]
        )
    headers = [
        "parameter",
        "mean",
        "sd",
        "5%",
        "95%",
        f"R-hat (≤ {conv.rhat_max})",
        f"bulk ESS (≥ {conv.ess_min:g})",
        f"tail ESS (≥ {conv.ess_min:g})",
        "MCSE mean",
        "MCSE sd",
    ]
    return table(headers, rows)


def _vector_table(ctx: Context, conv: D.Convergence) -> str:
    import arviz_stats as azs

    post = ctx.fit.posterior
    names = effect_vectors(post)
    if not names:
        return ""
    tree = ctx.fit.tree
    # a nested level alone in its parent (OPT among the designs) is a constant 0: its
    # R-hat and ESS are NaN, and the worst-level figures below skip it
    with np.errstate(invalid="ignore", divide="ignore"):
        rhat = azs.rhat(tree, var_names=names)
        bulk = azs.ess(tree, var_names=names, method="bulk")
        tail = azs.ess(tree, var_names=names, method="tail")
        mcse = azs.mcse(tree, var_names=names)
    rows = []
    for v in names:
        r = rhat[v].values
        worst = post[v].coords[post[v].dims[-1]].values[int(np.nanargmax(r))]
        rows.append(
            [
                Cell(v, "mono"),
                post[v].shape[-1],
                Cell(str(worst)),
                _rhat_cell(float(np.nanmax(r)), conv.rhat_max),
                _ess_cell(float(np.nanmin(bulk[v].values)), conv.ess_min),
                _ess_cell(float(np.nanmin(tail[v].values)), conv.ess_min),
                float(np.nanmax(mcse[v].values)),
            ]
        )
    return "<h3>Grouping effects (worst level of each)</h3>" + table(
        [
            "effect",
            "levels",
            "worst level (R-hat)",
            f"max R-hat (≤ {conv.rhat_max})",
            f"min bulk ESS (≥ {conv.ess_min:g})",
            f"min tail ESS (≥ {conv.ess_min:g})",
            "max MCSE mean",
        ],
        rows,
    )


def _sampler_table(ctx: Context, conv: D.Convergence) -> str:
    import arviz_stats as azs

    stats = ctx.fit.tree["sample_stats"].to_dataset()
    n_chain = stats.sizes.get("chain", 0)
    try:
        bfmi = azs.bfmi(ctx.fit.tree)["energy"].values if "energy" in stats else np.full(n_chain, np.nan)
    except (KeyError, ValueError, AttributeError):
        bfmi = np.full(n_chain, np.nan)
    rows = []
    for c in range(n_chain):
        one = stats.isel(chain=c)
        div = int(one["diverging"].sum()) if "diverging" in one else 0
        depth = int(one["maxdepth_reached"].sum()) if "maxdepth_reached" in one else None
        b = float(bfmi[c]) if c < len(bfmi) else float("nan")
        rows.append(
            [
                c,
                Cell(str(div), "num bad" if div > D.DIVERGENCES_MAX else "num ok", "threshold 0"),
                Cell(fixed(b, 2), "num bad" if not b >= conv.bfmi_min else "num ok", f"threshold ≥ {conv.bfmi_min}"),
                "—" if depth is None else depth,
                float(one["step_size"].mean()) if "step_size" in one else None,
                float(one["mean_tree_accept"].mean()) if "mean_tree_accept" in one else None,
                float(one["n_steps"].mean()) if "n_steps" in one else None,
            ]
        )
    return table(
        [
            "chain",
            "divergences (0)",
            f"BFMI (≥ {conv.bfmi_min})",
            "max tree depth hits",
            "step size",
            "mean accept",
            "mean leapfrog steps",
        ],
        rows,
    )


def _rank_plot(ctx: Context, names: list[str]) -> str:
    import arviz_plots as azp

    cols = 5
    rows = math.ceil(len(names) / cols)
    pc = azp.plot_rank(
        ctx.fit.tree,
        var_names=names,
        backend="matplotlib",
        col_wrap=cols,
        figure_kwargs={"figsize": (11, 1.75 * rows), "layout": "constrained"},
    )
    fig = pc.viz["figure"].item()
    return F.figure(
        fig,
        "Rank plots of the top-level parameters",
        "Fractional-rank Δ-ECDF per chain (arviz-plots). Chains that sample the same posterior stay "
        "inside the grey 99% simultaneous band; a chain wandering outside it has not mixed.",
    )


def _rank_fallback(ctx: Context, names: list[str]) -> str:
    """Rank histograms in plain matplotlib, for when arviz-plots misbehaves."""
    from scipy.stats import rankdata

    post = ctx.fit.posterior
    cols = 5
    rows = math.ceil(len(names) / cols)
    fig = F.new_figure(11, 1.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, v in zip(axes.flat, names):
        x = post[v].values
        ranks = rankdata(x.ravel()).reshape(x.shape)
        for c in range(x.shape[0]):
            ax.hist(ranks[c], bins=20, histtype="step", color=F.PALETTE[c % len(F.PALETTE)])
        ax.set_title(v)
        ax.set_yticks([])
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    return F.figure(
        fig, "Rank histograms of the top-level parameters", "Rank histograms per chain (flat when chains agree)."
    )


def _trace_plot(ctx: Context, names: list[str]) -> str:
    import arviz_plots as azp

    pc = azp.plot_trace(
        ctx.fit.tree,
        var_names=names,
        backend="matplotlib",
        col_wrap=len(names),
        figure_kwargs={"figsize": (11, 2.0), "layout": "constrained"},
    )
    return F.figure(
        pc.viz["figure"].item(),
        "Trace plots of the scaling-law parameters",
        "Draws against iteration, one colour per chain: stationary, overlapping bands are what "
        "converged chains look like.",
    )


def render(ctx: Context) -> Section:
    conv = D.check(ctx.fit.tree)
    post = ctx.fit.posterior
    names = [v for v in top_level(post) if v not in fixed_params(post, top_level(post))]
    if conv.ok:
        head = banner("All convergence checks pass: " + conv.line(), "ok")
    else:
        head = banner(
            "Convergence checks FAIL: " + "; ".join(conv.failures) + ". Do not trust this fit's numbers "
            "until it is re-run with more tuning or draws (" + conv.line() + ").",
            "bad",
        )
    try:
        rank = _rank_plot(ctx, names)
    except Exception:  # noqa: BLE001 - arviz-plots 0.8 is young; fall back to plain matplotlib
        rank = F.safe("the rank plots", _rank_fallback, ctx, names)
    trace_vars = [v for v in ("bits_rate", "gamma_n", "gamma_d", "intercept") if v in post]
    body = (
        head + "<p>Diagnostics from arviz-stats: rank-normalised split R-hat, bulk and tail effective sample size, "
        "Monte Carlo standard error. The checks cover every sampled variable, including the "
        "non-centred <code>z_*</code> offsets and log-transformed scales "
        f"(worst R-hat: <code>{esc(conv.worst_rhat_var)}</code>). Cells outside a threshold are red; "
        "parameters the spec fixes (not sampled) are marked fixed.</p>"
        + "<h3>Top-level parameters</h3>"
        + F.safe("the parameter table", _param_table, ctx, conv)
        + F.safe("the effect table", _vector_table, ctx, conv)
        + "<h3>Sampler</h3>"
        + F.safe("the sampler table", _sampler_table, ctx, conv)
        + rank
        + F.safe("the trace plots", _trace_plot, ctx, trace_vars)
    )
    return Section("convergence", "2. Convergence", body)
