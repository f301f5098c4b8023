"""Section 6: decisions. Predicted perplexity against bits for a few model sizes, and
the best (size, bits) under each weight-memory budget."""

from __future__ import annotations

import numpy as np
import polars as pl

from qbayes.report import decisions as dec
from qbayes.report import figures as F
from qbayes.report.context import Context
from qbayes.report.html import Cell, Section, esc, fixed, interval, num, table


def _curve_figure(pred: pl.DataFrame, sc: dec.Scenario) -> str:
    fig = F.new_figure(11, 4.2)
    ax = fig.add_subplot()
    curve_bits = set(dec.CURVE_BITS)
    for i, size in enumerate(sc.sizes):
        d = pred.filter((pl.col("params_b") == size) & pl.col("w_bits").is_in(list(curve_bits))).sort("bits")
        x = d.get_column("bits").to_numpy()
        colour = F.PALETTE[i % len(F.PALETTE)]
        ax.fill_between(x, d["ppl_q05"].to_numpy(), d["ppl_q95"].to_numpy(), color=colour, alpha=0.13, linewidth=0)
        ax.fill_between(x, d["ppl_q25"].to_numpy(), d["ppl_q75"].to_numpy(), color=colour, alpha=0.25, linewidth=0)
        ax.plot(x, d["ppl_q50"].to_numpy(), color=colour, linewidth=1.8, label=f"{size:g}B")
        ax.axhline(float(sc.fp16_ppl(size)), color=colour, linewidth=0.8, linestyle=":")
    F.plain_log(ax, "y")
    ax.set_xlabel(f"effective bits per weight (integer weights, group size {dec.GROUP})")
    ax.set_ylabel(F.plain(f"predicted perplexity on {sc.eval_set}"))
    ax.legend(title="parameters", frameon=False)
    lo = float(sc.fp16_ppl(max(sc.sizes))) * 0.9
    hi = float(np.nanmax(pred.filter(pl.col("w_bits") >= 2.5)["ppl_q95"].to_numpy())) * 1.3
    hi = min(hi, 5 * float(sc.fp16_ppl(min(sc.sizes))))  # heavy-tailed bands must not flatten the curves
    if np.isfinite(hi) and hi > lo:
        ax.set_ylim(lo, hi)
    return F.figure(
        fig,
        "Predicted perplexity against bits for several model sizes",
        "Median (line), 50% and 90% predictive intervals (bands); dotted: the fp16 perplexity of "
        "the same size. Below about 3 bits the intervals widen fast: that is where the data say "
        "methods and models diverge most.",
    )


def _curve_table(pred: pl.DataFrame, sc: dec.Scenario) -> str:
    rows = []
    for w in dec.TABLE_BITS:
        row = [Cell(f"{w:g}", "num")]
        for size in sc.sizes:
            d = pred.filter((pl.col("params_b") == size) & (pl.col("w_bits") == w))
            if d.height == 0:
                row.append("—")
                continue
            r = d.row(0, named=True)
            row.append(Cell(interval(r["ppl_q50"], r["ppl_q05"], r["ppl_q95"]), "num"))
        rows.append(row)
    fp = [Cell("fp16", "num")] + [
        Cell(num(float(pred.filter(pl.col("params_b") == s)["fp16_ppl"][0])), "num") for s in sc.sizes
    ]
    return table(["weight bits"] + [f"{s:g}B: median ppl [90%]" for s in sc.sizes], rows + [fp])


def _label(r: dict) -> str:
    bits = "fp16" if r["fp16"] else f"{r['w_bits']:g}-bit"
    return f"{r['params_b']:g}B {bits}"


def _frontier_figure(fr: dec.Frontier, sc: dec.Scenario) -> str:
    o = fr.options
    fig = F.new_figure(11, 4.6)
    ax = fig.add_subplot()
    for size in sc.frontier_sizes:
        d = o.filter(pl.col("params_b") == size).sort("memory_gb")
        ax.plot(d["memory_gb"].to_numpy(), d["ppl_q50"].to_numpy(), color="#cccccc", linewidth=0.8, zorder=1)
    bit_levels = list(dec.FRONTIER_BITS) + [dec.FP16_BITS]
    for i, w in enumerate(bit_levels):
        d = o.filter(pl.col("w_bits") == w)
        ax.scatter(
            d["memory_gb"].to_numpy(),
            d["ppl_q50"].to_numpy(),
            s=22,
            zorder=3,
            color=F.PALETTE[i % len(F.PALETTE)],
            label="fp16" if w == dec.FP16_BITS else f"{w:g}-bit",
        )
    p = dec.pareto(o)
    ax.step(
        p["memory_gb"].to_numpy(),
        p["ppl_q50"].to_numpy(),
        where="post",
        color="black",
        linewidth=1.2,
        zorder=2,
        label="frontier",
    )
    rows = o.to_dicts()
    for i in sorted({c for c in fr.choices["best"].to_list() if c is not None}):
        r = rows[i]
        ax.annotate(
            _label(r),
            (r["memory_gb"], r["ppl_q50"]),
            textcoords="offset points",
            xytext=(-6, -11),
            fontsize=7.5,
            ha="right",
            fontweight="bold",
        )
        ax.scatter([r["memory_gb"]], [r["ppl_q50"]], s=70, facecolors="none", edgecolors="black", zorder=4)
    for b in dec.BUDGETS_GB:
        ax.axvline(b, color="grey", linewidth=0.6, linestyle=":", zorder=0)
    F.plain_log(ax, "x"), F.plain_log(ax, "y")
    good = o.filter(pl.col("w_bits") >= 3)
    ax.set_ylim(float(good["ppl_q50"].min()) * 0.9, float(good["ppl_q50"].max()) * 1.4)
    ax.set_xlabel("weight memory (GB) = parameters × effective bits / 8; dotted lines: budgets")
    ax.set_ylabel(F.plain(f"predicted median perplexity on {sc.eval_set}"))
    ax.legend(frameon=False, ncols=4, loc="upper right")
    return F.figure(
        fig,
        "Size–precision frontier: predicted perplexity against weight memory",
        "Each point is one model size at one precision (grey lines join the same size). The black "
        "staircase is the frontier: for a given memory, nothing beats it. Circled and labelled: the best "
        "option under each budget (table below). Points at 2 bits may lie above the plotted range.",
    )


def _choices_table(fr: dec.Frontier) -> str:
    o = fr.options.to_dicts()
    rows = []
    for c in fr.choices.iter_rows(named=True):
        if c["best"] is None:
            rows.append([Cell(f"{c['budget_gb']:g}", "num"), "nothing fits", "", "", "", ""])
            continue
        b = o[c["best"]]
        ru = o[c["runner_up"]] if c["runner_up"] is not None else None
        rows.append(
            [
                Cell(f"{c['budget_gb']:g}", "num"),
                _label(b),
                Cell(fixed(b["memory_gb"], 1), "num"),
                Cell(interval(b["ppl_q50"], b["ppl_q05"], b["ppl_q95"]), "num"),
                "—" if ru is None else f"{_label(ru)} (ppl {num(ru['ppl_q50'])}, {fixed(ru['memory_gb'], 1)} GB)",
                Cell(fixed(c["p_runner_up_within"], 2), "num"),
            ]
        )
    tol = f"{dec.DEFAULT_TOLERANCE:.0%}"
    return table(
        [
            "budget (GB)",
            "best option",
            "memory (GB)",
            "predicted ppl, median [90%]",
            "runner-up",
            f"P(runner-up within {tol})",
        ],
        rows,
    )


def render(ctx: Context) -> Section:
    sc = dec.scenario(ctx.fit, ctx.scenario)
    fp = f"exp({sc.ppl_a:.3f} {'+' if sc.ppl_b >= 0 else '−'} {abs(sc.ppl_b):.3f}·ln params_B)"
    tokens = (
        f"{sc.train_tokens_b:g}B training tokens"
        if sc.train_tokens_b
        else "training tokens drawn from the fitted population"
    )
    intro = (
        f"<p>Scenario: the <b>{esc(sc.family)}</b> models of the data "
        f"({esc(', '.join(f'{x:g}B' for x in sc.frontier_sizes))}; <code>qbayes report --scenario FAMILY</code> "
        f"picks another family), quantized with <b>{esc(sc.method)}</b>, integer weights with group size "
        f"{dec.GROUP}, 16-bit activations, perplexity on <b>{esc(sc.eval_set)}</b>, {esc(tokens)}. The fp16 "
        "perplexity of each size is the one measured on its model (the median over studies); other sizes "
        f"would take a straight-line fit of ln ppl against ln params on {esc(sc.ppl_basis)}: ppl_fp16 ≈ "
        f"{esc(fp)}. Predictions come from <code>Predictor.predict</code> and include observation noise.</p>"
    )
    pred = dec.curves(ctx.predictor, sc)
    fr = dec.frontier(ctx.predictor, sc)
    body = (
        intro
        + "<h3>Perplexity against bits</h3>"
        + F.safe("the perplexity curves", _curve_figure, pred, sc)
        + _curve_table(pred, sc)
        + "<h3>Best size and precision under a memory budget</h3>"
        "<p>For each budget, every (size, bits) whose weights fit is a candidate; the best has the lowest "
        "predicted median perplexity. The last column is the probability that the runner-up's perplexity, "
        "as one would measure it (observation noise included), is within 1% of the best's: near 1, the "
        "choice between them hardly matters. Weight memory only: activations and the KV cache come on "
        "top.</p>" + F.safe("the frontier plot", _frontier_figure, fr, sc) + _choices_table(fr)
    )
    return Section("decisions", "6. Decisions", body)
