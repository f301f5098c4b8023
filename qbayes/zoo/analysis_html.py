"""The zoo analysis as one self-contained HTML page (inline PNG figures, no script, no
network), built with the report's helpers (:mod:`qbayes.report.html`, ``figures``)."""

from __future__ import annotations

import numpy as np
import polars as pl

from qbayes.report import figures
from qbayes.report.html import (
    Section,
    banner,
    details,
    esc,
    interval,
    kv_table,
    num,
    page,
    para,
    table,
)
from qbayes.zoo import analysis, analysis_features, analysis_table
from qbayes.zoo.analysis import DN_MODELS
from qbayes.zoo.analysis_heldout import SCHEMES
from qbayes.zoo.analysis_result import DnStudy, FeatureStudy, Gamma, HeldOut, Noise, Score, ZooAnalysis

NO_FOLDS = "Held-out comparisons need two or more architectures or sizes; these data have one of each."
DN_LABELS = {"without_ln_d": "ln N only", "with_ln_d": "+ ln D", "with_ln_d_by_bits": "+ ln D per bit width"}


def render(result: ZooAnalysis, zoo: pl.DataFrame) -> str:
    r = result
    summary = Section("summary", "Summary", "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in summary_lines(r)) + "</ul>")
    with figures.style():
        sections = [summary, _data(r), _dn(r, zoo), _dn_heldout(r), _features(r), _method(r)]
    d = r.data
    subtitle = (
        f"{d.rows} quantized rows of {d.models} checkpoints · families {', '.join(d.families)} · "
        f"sizes {', '.join(d.sizes)} · seed {r.settings.seed}"
    )
    return page("Zoo analysis: D/N and landscape features", subtitle, sections)


def _ci(g: Gamma, name: str) -> str:
    mid, lo, hi = getattr(g, f"gamma_{name}"), getattr(g, f"gamma_{name}_lo"), getattr(g, f"gamma_{name}_hi")
    return num(mid) if mid is None or lo is None or hi is None else interval(mid, lo, hi)


def summary_lines(r: ZooAnalysis) -> list[str]:
    """The answers in a few sentences, computed from the results (for the page and the CLI)."""
    out = []
    g = r.dn.pooled["clear"]
    if g.gamma_d is None:
        out.append("D/N: not identified in these data (too few budgets or clear rows).")
    else:
        lo, hi = g.gamma_d_lo, g.gamma_d_hi
        verdict = (
            "grows with D/N at fixed format"
            if lo is not None and lo > 0
            else "shrinks with D/N at fixed format"
            if hi is not None and hi < 0
            else "has no resolved D/N trend"
            if lo is not None
            else "has an unresolved D/N trend (no interval)"
        )
        out.append(
            f"Degradation {verdict}: gamma_D = {_ci(g, 'd')} (delta ∝ D^gamma_D / N^gamma_N on "
            f"{g.n_rows} clear rows of {g.n_models} checkpoints; gamma_N = {_ci(g, 'n')})."
        )
        bits = [f"{b.w_bits:g} bit {_ci(b.clear, 'd')}" for b in r.dn.per_bits if b.clear.gamma_d is not None]
        if bits:
            out.append("gamma_D per bit width: " + "; ".join(bits) + ".")
    for scheme, res in r.dn.heldout.items():
        o = res.overall.scores
        out.append(
            f"Leave one {scheme} out: adding ln D takes held-out MdAE(ln) from "
            f"{num(o['without_ln_d'].mdae_ln)} to {num(o['with_ln_d'].mdae_ln)} (better in "
            f"{_wins(res)}/{len(res.folds)} folds) and MdAE(delta) from "
            f"{num(o['without_ln_d'].mdae_delta)} to {num(o['with_ln_d'].mdae_delta)} nats/token."
        )
    for scheme, by_learner in r.features.improvement.items():
        for lr, rows in by_learner.items():
            helps = [
                f"{x.set} ({100 * x.rel_ln:+.0f}%, {x.folds_better_ln}/{len(x.folds)} folds)"
                for x in rows
                if x.set not in ("base", "all") and (x.rel_ln or 0) > 0.05 and 2 * x.folds_better_ln > len(x.folds)
            ]
            out.append(
                f"Leave one {scheme} out, {lr}: feature groups improving held-out MdAE(ln) over base by > 5% "
                f"in most folds: {', '.join(helps) or 'none'}."
            )
    t = r.features.theory
    if t.slope_clear is not None:
        out.append(
            f"1/2 tr(H) 10^(-SQNR/10) vs delta: Spearman {num(t.spearman)}, log-log slope "
            f"{num(t.slope_clear)} on clear rows (1 = second-order theory)."
        )
    return out


def _wins(res: HeldOut[Score]) -> int:
    """Folds where + ln D has the lower held-out MdAE(ln)."""
    return sum(
        1
        for f in res.folds
        if None not in (f.scores["with_ln_d"].mdae_ln, f.scores["without_ln_d"].mdae_ln)
        and f.scores["with_ln_d"].mdae_ln < f.scores["without_ln_d"].mdae_ln
    )


def _data(r: ZooAnalysis) -> Section:
    d, n = r.data, r.noise
    body = kv_table(
        [
            ("rows / checkpoints", f"{d.rows} / {d.models}"),
            ("D/N range", f"{num(d.dn_range[0])} to {num(d.dn_range[1])} tokens per parameter"),
            ("formats", ", ".join(d.formats)),
            ("evaluation sets", ", ".join(d.eval_sets)),
            ("noise sigma of delta", f"{num(n.sigma)} nats/token ({n.n_negative} negative deltas)"),
            ("clear rows", f"{n.n_clear} with delta > {num(n.threshold)} ({n.clear_k:g} sigma)"),
            ("features present", ", ".join(d.features_present) or "none"),
        ]
    )
    grid = table(["family", "size", "checkpoints"], [[c.family, c.size, c.checkpoints] for c in d.checkpoints])
    notes = "".join(banner(x) for x in r.notes)
    return Section("data", "Data", notes + body + details("Checkpoints per family and size", grid))


def _gamma_row(g: Gamma) -> list:
    return [
        interval(g.gamma_d, g.gamma_d_lo, g.gamma_d_hi),
        interval(g.gamma_n, g.gamma_n_lo, g.gamma_n_hi),
        g.n_rows,
        g.n_models,
    ]


def _dn(r: ZooAnalysis, zoo: pl.DataFrame) -> Section:
    dn = r.dn
    targets = ("ln delta, clear rows", "ln(delta+sigma), all rows")
    rows = [_gamma_row(dn.pooled["clear"]), _gamma_row(dn.pooled["shift"])]
    pooled = table(
        ["target", "gamma_D [CI]", "gamma_N [CI]", "rows", "models"], [[name, *row] for name, row in zip(targets, rows)]
    )
    per_bits = table(
        ["w_bits", "clear share", "gamma_D clear", "gamma_N clear", "rows", "models", "gamma_D all rows"],
        [
            [
                b.w_bits,
                b.frac_clear,
                *_gamma_row(b.clear),
                interval(b.shift.gamma_d, b.shift.gamma_d_lo, b.shift.gamma_d_hi),
            ]
            for b in dn.per_bits
        ],
    )
    per_fmt = table(
        ["format", "bits", "clear share", "median delta", "gamma_D [CI]", "gamma_N [CI]", "rows", "models"],
        [[f.fmt, f.bits, f.frac_clear, f.median_delta, *_gamma_row(f.fit)] for f in dn.per_format],
    )
    ci = round(100 * r.settings.ci)
    body = (
        para(
            f"Fit of ln delta = a[format, calibration, text] + b[family] + gamma_D ln D - gamma_N ln N "
            f"(delta ∝ D^gamma_D / N^gamma_N, the form of arXiv 2411.04330). gamma_D > 0 means degradation "
            f"grows with training tokens at fixed size, i.e. with D/N. Intervals: {ci}% percentile bootstrap "
            f"over checkpoints ({r.settings.bootstrap} resamples)."
        )
        + pooled
        + figures.safe("delta vs D/N", _dn_figure, zoo, dn, r.noise)
        + figures.safe("gamma_D per bit width", _gamma_figure, dn)
        + "<h3>Per nominal bit width</h3>"
        + per_bits
        + details("Per format (clear rows)", per_fmt)
    )
    return Section("dn", "Does degradation grow with D/N?", body)


def _pick_formats(dn: DnStudy, limit: int = 4) -> list[str]:
    best = {}
    for f in dn.per_format:
        score = (f.fmt.startswith("RTN/"), "-g" in f.fmt, "/int" in f.fmt, f.rows)
        if f.w_bits not in best or score > best[f.w_bits][0]:
            best[f.w_bits] = (score, f.fmt)
    return [best[b][1] for b in sorted(best)][:limit]


def _dn_figure(zoo: pl.DataFrame, dn: DnStudy, noise: Noise) -> str:
    fmts = _pick_formats(dn)
    fams = sorted(set(zoo["family"]))
    sizes = sorted(set(zoo["size"]))
    colours = {s: figures.PALETTE[i % len(figures.PALETTE)] for i, s in enumerate(sizes)}
    fig = figures.new_figure(3.0 * len(fmts) + 0.8, 2.4 * len(fams) + 0.4)
    axes = fig.subplots(len(fams), len(fmts), squeeze=False, sharex=True)
    floor = noise.sigma / 2
    per_model = zoo.group_by("family", "size", "model", "fmt", "log_dn").agg(pl.col("delta").mean()).sort("log_dn")
    for i, fam in enumerate(fams):
        for j, fmt in enumerate(fmts):
            ax = axes[i][j]
            sub = per_model.filter((pl.col("family") == fam) & (pl.col("fmt") == fmt))
            for size in sizes:
                s = sub.filter(pl.col("size") == size)
                if s.height:
                    ax.plot(
                        np.exp(s["log_dn"].to_numpy()),
                        np.maximum(s["delta"].to_numpy(), floor),
                        "o-",
                        color=colours[size],
                        ms=4,
                        lw=1,
                        label=size,
                    )
            ax.axhline(noise.threshold, color="0.5", ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(figures.plain(f"{fam} · {fmt}"))
            if j == 0:
                ax.set_ylabel("delta (nats/token)")
            if i == len(fams) - 1:
                ax.set_xlabel("D/N (tokens per parameter)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title="size")
    return figures.figure(
        fig,
        "delta against D/N per architecture and format",
        "Mean delta over evaluation texts per checkpoint, against tokens per parameter, at fixed "
        "format (columns: one format per nominal bit width) and architecture (rows); colour: size. "
        "Dashed: the clear-row threshold; points below sigma/2 are drawn at sigma/2.",
    )


def _gamma_figure(dn: DnStudy) -> str:
    fig = figures.new_figure(5.2, 2.6)
    ax = fig.subplots()
    for k, (key, label) in enumerate((("clear", "ln delta, clear rows"), ("shift", "ln(delta+sigma), all rows"))):
        fits = [getattr(b, key) for b in dn.per_bits if getattr(b, key).gamma_d is not None]
        x = np.arange(len(fits)) + (k - 0.5) * 0.2
        mid = np.array([g.gamma_d for g in fits], dtype=float)
        lo = np.array([_nan(g.gamma_d_lo) for g in fits])
        hi = np.array([_nan(g.gamma_d_hi) for g in fits])
        ax.errorbar(
            x,
            mid,
            yerr=[np.nan_to_num(mid - lo), np.nan_to_num(hi - mid)],
            fmt="o",
            capsize=3,
            color=figures.PALETTE[k],
            label=label,
        )
    ax.axhline(0, color="0.3", lw=0.8)
    labels = [f"{b.w_bits:g} bit" for b in dn.per_bits]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("gamma_D")
    ax.legend()
    return figures.figure(
        fig,
        "gamma_D per bit width",
        "gamma_D (the D/N slope at fixed N) per nominal bit width, with bootstrap intervals over checkpoints.",
    )


def _nan(x):
    return np.nan if x is None else float(x)


def _dn_heldout(r: ZooAnalysis) -> Section:
    parts = []
    for scheme, res in r.dn.heldout.items():
        rows = [
            [
                fold,
                n,
                s["with_ln_d"].n_predicted,
                *[s[m].mdae_delta for m in DN_MODELS],
                *[s[m].mdae_ln for m in DN_MODELS],
            ]
            for fold, n, s in [
                *((f.fold, f.n, f.scores) for f in res.folds),
                ("all", res.overall.n, res.overall.scores),
            ]
        ]
        parts.append(
            f"<h3>Leave one {scheme} out ({SCHEMES[scheme]})</h3>"
            + para(f"+ ln D lowers MdAE(ln) in {_wins(res)} of {len(res.folds)} folds.")
            + table(
                [
                    "held out",
                    "rows",
                    "predicted",
                    *[f"MdAE delta: {DN_LABELS[m]}" for m in DN_MODELS],
                    *[f"MdAE ln: {DN_LABELS[m]}" for m in DN_MODELS],
                ],
                rows,
            )
        )
    body = para(
        "Least squares on ln(max(delta,0)+sigma) with format/text and family effects and ln N, with and "
        "without ln D, predicting checkpoints of an architecture or a size not seen in the fit "
        "(rows of a configuration the fit never saw are not predicted). "
        "MdAE delta in nats/token; MdAE ln on the log target."
    )
    body += "".join(parts) or banner(NO_FOLDS)
    return Section("dn-heldout", "D/N held out", body)


def _features(r: ZooAnalysis) -> Section:
    f = r.features
    parts = [
        para(
            "Held-out prediction of ln(max(delta,0)+sigma). base: ln N, ln D, bits, group, per-channel, method, "
            "format kind, text, calibration set; each set adds one feature group to base; theory_only is "
            "1/2 tr(H) 10^(-SQNR/10) alone. Improvement = (MdAE base - MdAE set) / MdAE base."
        )
    ]
    if f.heldout:
        parts.append(figures.safe("held-out MdAE per feature set", _feature_figure, f))
    else:
        parts.append(banner(NO_FOLDS))
    for scheme, by_learner in f.improvement.items():
        for lr, rows in by_learner.items():
            folds = [x.fold for x in rows[0].folds] if rows else []
            parts.append(
                f"<h3>Leave one {scheme} out · {lr}</h3>"
                + table(
                    [
                        "set",
                        "MdAE delta",
                        "MdAE ln",
                        "improvement delta",
                        "improvement ln",
                        "folds better (ln)",
                        *[f"impr. ln: {x}" for x in folds],
                    ],
                    [
                        [
                            x.set,
                            x.score.mdae_delta,
                            x.score.mdae_ln,
                            x.rel_delta,
                            x.rel_ln,
                            f"{x.folds_better_ln}/{len(x.folds)}",
                            *[y.rel_ln for y in x.folds],
                        ]
                        for x in rows
                    ],
                )
            )
    for scheme, by_learner in f.permutation.items():
        for lr, rows in by_learner.items():
            parts.append(
                details(
                    f"Permutation importance, leave one {scheme} out · {lr} ('all' set)",
                    table(
                        ["block", "rise MdAE ln", "rise MdAE delta"],
                        [[x.block, x.rise_mdae_ln, x.rise_mdae_delta] for x in rows],
                    ),
                )
            )
    t = f.theory
    within = ", ".join(f"{w.w_bits:g} bit: {num(w.rho)}" for w in t.spearman_within_bits) or "—"
    parts.append(
        "<h3>Theory: delta ≈ 1/2 tr(H) · noise power</h3>"
        + kv_table(
            [
                ("rows with the predictor", t.rows),
                ("Spearman rho with delta", num(t.spearman)),
                ("rho within bit width", within),
                ("log-log slope on clear rows (1 = second-order theory)", num(t.slope_clear)),
                ("median delta / predictor on clear rows (the missing mean w²)", num(t.median_ratio_clear)),
            ]
        )
    )
    return Section("features", "Which features carry information beyond size and bits?", "".join(parts))


def _feature_figure(f: FeatureStudy) -> str:
    schemes = list(f.heldout)
    fig = figures.new_figure(4.6 * len(schemes), 5.0)
    axes = fig.subplots(2, len(schemes), squeeze=False)
    for j, scheme in enumerate(schemes):
        overall = f.heldout[scheme].overall.scores
        names = list(overall["ridge"])
        x = np.arange(len(names))
        for i, metric in enumerate(("mdae_ln", "mdae_delta")):
            ax = axes[i][j]
            for k, lr in enumerate(("ridge", "forest")):
                vals = [_nan(getattr(overall[lr][n], metric)) for n in names]
                ax.bar(x + (k - 0.5) * 0.38, vals, width=0.38, color=figures.PALETTE[k], label=lr)
                ax.axhline(_nan(getattr(overall[lr]["base"], metric)), color=figures.PALETTE[k], ls="--", lw=0.8)
            ax.set_xticks(x, [figures.plain(n) for n in names], rotation=35, ha="right")
            ax.set_ylabel("MdAE " + ("ln(delta+sigma)" if metric == "mdae_ln" else "delta"))
            ax.set_title(f"leave one {scheme} out")
        axes[0][j].legend()
    return figures.figure(
        fig,
        "held-out MdAE per feature set",
        "Held-out MdAE (pooled over folds) for each feature set; dashed: base covariates only.",
    )


def _method(r: ZooAnalysis) -> Section:
    docs = [analysis_table.__doc__, analysis.__doc__, analysis_features.__doc__]
    body = "".join(f"<pre style='white-space:pre-wrap'>{esc(d.strip())}</pre>" for d in docs if d)
    return Section("method", "Method and choices", body)
