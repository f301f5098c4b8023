"""Section 4: what the model learned. Forest plots of the pooled family, method and
format effects with their population spread; the scaling-law exponents with intervals
next to the constants published in arXiv 2411.04330."""

from __future__ import annotations

import numpy as np

from qbayes.model.spec import GROUPINGS, SD_PRIOR
from qbayes.report import figures as F
from qbayes.report.context import Context
from qbayes.report.forest import KINDS, forest, quantiles
from qbayes.report.html import Cell, Section, details, esc, interval, num, table

GROUPING_NAMES = {
    "family": "Model family",
    "arch": "Block design (norm+MLP)",
    "method": "Quantization method",
    "w_kind": "Format kind",
    "eval_set": "Evaluation set",
    "source": "Source (study)",
    "family_method": "Family × method",
    "arch_method": "Block design × method",
    "format": "Named format (within its method)",
    "model": "Model (within its family)",
    "cell": "Family × method × bits × grouping",
    "setting": "Method × bits × grouping (within its method)",
    "model_cell": "Model × method × bits × grouping",
}
# arXiv 2411.04330 (Kumar et al., "Scaling Laws for Precision"), post-training quantization
# fit delta_PTQ = C_T * D^gamma_D / N^gamma_N * exp(-P_post / gamma_post), on their setup.
PUBLISHED = {"gamma_n": 0.34, "gamma_d": 0.51}


def _kinds(ctx: Context, g: str) -> list[str]:
    e = ctx.fit.spec.effects.get(g)
    if e is None:
        return []
    return [k for k in e.kinds if f"{k}_{g}" in ctx.fit.posterior]


def _pooling_table(ctx: Context) -> str:
    post, pri = ctx.fit.posterior, ctx.fit.spec.priors
    rows = []
    for g in ctx.fit.spec.effects:
        for k in _kinds(ctx, g):
            sd = post.get(f"sd_{k}_{g}")
            if sd is None:
                continue
            q = np.quantile(sd.values, [0.5, 0.05, 0.95])
            prior = getattr(pri, SD_PRIOR[k])
            rows.append(
                [
                    g,
                    KINDS[k][0],
                    len(ctx.levels(g)),
                    Cell(interval(*q), "num"),
                    Cell(f"HalfNormal({num(prior.sigma)})", "mono"),
                ]
            )
    return table(["grouping", "effect", "levels", "population sd, median [90%]", "prior"], rows)


def _effects_table(ctx: Context, g: str, kinds: list[str], order) -> str:
    post = ctx.fit.posterior
    levels = [str(v) for v in post[f"{kinds[0]}_{g}"].coords[g].values]
    qs = {k: quantiles(post[f"{k}_{g}"].values, (0.5, 0.05, 0.95)) for k in kinds}
    counts = ctx.counts(g)
    rows = []
    for i in order:
        rows.append([levels[i], counts.get(levels[i], 0)] + [Cell(interval(*qs[k][:, i]), "num") for k in kinds])
    return table([g, "rows"] + [f"{KINDS[k][0]} median [90%]" for k in kinds], rows)


def _forests(ctx: Context) -> str:
    out = []
    post = ctx.fit.posterior
    for g in GROUPINGS:
        kinds = _kinds(ctx, g)
        if not kinds:
            continue
        fig, order = forest(post, g, kinds, ctx.counts(g))
        out.append(f"<h3>{esc(GROUPING_NAMES[g])}</h3>")
        out.append(
            F.figure(
                fig,
                f"Forest plot of the {g} effects",
                f"Posterior median (circle), 50% (thick) and 90% (thin) intervals of each {g}'s effect; "
                "the shaded band is ± the fitted population sd, where a level never seen lands. "
                "Levels with few rows are pulled toward 0 (shrinkage) and keep wide intervals.",
            )
        )
        out.append(details(f"Exact numbers ({g})", _effects_table(ctx, g, kinds, order)))
    return "".join(out)


def exponents(ctx: Context) -> list[tuple[str, str, np.ndarray, float | None, str]]:
    """(key, label, draws, published value, note) for the scaling-law exponents."""
    post = ctx.fit.posterior
    out = []
    if "gamma_n" in post:
        out.append(
            (
                "gamma_n",
                "γ_N (model size)",
                post["gamma_n"].values.ravel(),
                PUBLISHED["gamma_n"],
                "Δ ∝ N^−γ_N: larger models degrade less",
            )
        )
    if "gamma_d" in post:
        within = ctx.fit.spec.tokens_within and GROUPING_NAMES[ctx.fit.spec.tokens_within].split(" (")[0].lower()
        note = "Δ ∝ D^γ_D: models trained on more tokens degrade more" + (
            f" (learned within each {within} only: between them, D is confounded with what each {within} "
            "carries; a new one gets no D term)"
            if within
            else ""
        )
        out.append(("gamma_d", "γ_D (training tokens)", post["gamma_d"].values.ravel(), PUBLISHED["gamma_d"], note))
    if "bits_rate" in post:
        rate = post["bits_rate"].values.ravel()
        out.append(
            (
                "gamma",
                "γ = 1 / bits_rate (at 4 bits)",
                1.0 / rate,
                None,
                "Δ ∝ exp(−bits/γ) at the reference (4 bits, pooled over families and methods)",
            )
        )
        if "bits_curvature" in post:
            curv = post["bits_curvature"].values.ravel()
            for b in (3.0, 2.0):
                local = rate - 2.0 * curv * (b - 4.0)
                out.append(
                    (
                        f"gamma_{b:g}",
                        f"γ local at {b:g} bits",
                        1.0 / local,
                        None,
                        "with the fitted curvature: 1 / (bits_rate − 2·curvature·(bits − 4))",
                    )
                )
    return out


def _exponent_table(ctx: Context) -> str:
    rows = []
    for _key, label, draws, pub, note in exponents(ctx):
        q = np.quantile(draws, [0.5, 0.05, 0.95])
        rows.append([label, Cell(interval(*q), "num"), Cell(num(pub) if pub is not None else "—", "num"), note])
    return table(["exponent", "posterior median [90%]", "arXiv 2411.04330", "meaning"], rows)


def _exponent_figure(ctx: Context) -> str:
    pri = ctx.fit.spec.priors
    items = [e for e in exponents(ctx) if e[0] in ("gamma_n", "gamma_d", "gamma")]
    rng = np.random.default_rng(ctx.seed)
    prior_draws = {
        "gamma_n": rng.normal(pri.gamma_n.mu, pri.gamma_n.sigma, 20000),
        "gamma_d": rng.normal(pri.gamma_d.mu, pri.gamma_d.sigma, 20000),
    }
    rate = rng.normal(pri.bits_rate.mu, pri.bits_rate.sigma, 20000)
    prior_draws["gamma"] = 1.0 / rate[rate > 0.2]
    fig = F.new_figure(11, 2.9)
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    for ax, (key, label, draws, pub, _note) in zip(axes, items):
        lo, hi = np.quantile(draws, [0.001, 0.999])
        pad = 0.15 * (hi - lo) + 1e-9
        lo, hi = lo - pad, hi + pad
        if pub is not None:
            lo, hi = min(lo, pub - pad), max(hi, pub + pad)
        ax.hist(draws, bins=40, range=(lo, hi), density=True, color=F.PALETTE[0], alpha=0.6, label="posterior")
        pd = prior_draws[key]  # drawn as a density over the window (mass outside is left out)
        ax.hist(
            pd,
            bins=40,
            range=(lo, hi),
            weights=np.full(len(pd), 40 / (len(pd) * (hi - lo))),
            histtype="step",
            color="grey",
            linestyle="--",
            label="prior",
        )
        q5, q95 = np.quantile(draws, [0.05, 0.95])
        ax.axvspan(q5, q95, color=F.PALETTE[0], alpha=0.08, linewidth=0)
        if pub is not None:
            ax.axvline(pub, color=F.PALETTE[3], linewidth=1.6, label=f"arXiv 2411.04330: {pub}")
        ax.set_title(label)
        ax.set_yticks([])
        ax.legend(frameon=False, fontsize=7)
    return F.figure(
        fig,
        "Posterior of the scaling-law exponents against the published constants",
        "Posterior (filled, 90% interval shaded), prior (dashed) and, where published, the constant of "
        "arXiv 2411.04330 (red). Their fit used pretraining runs up to 1.7B parameters and 26B tokens "
        "on one data set; these data are published results of released models, so agreement is not "
        "expected to be exact.",
    )


def _noise_table(ctx: Context) -> str:
    """The Student-t on ln(delta + shift): its scale where each noise term is off and what each
    term multiplies it by, and its degrees of freedom."""
    post, spec = ctx.fit.posterior, ctx.fit.spec
    rel = post["noise_rel"].values.ravel()
    rows = [
        [
            "scale at 4 bits or more, grouped",
            Cell(interval(*np.quantile(rel, [0.5, 0.05, 0.95])), "num"),
            "relative error of Δ + 0.01 that one scale unit means",
        ]
    ]
    factors = {
        "low_bits": (2.0, "× scale at 2 bits (per bit below 4: exp(noise_low_bits))"),
        "per_channel": (1.0, "× scale per channel (no groups)"),
    }
    for t in spec.noise:
        at, label = factors[t]
        f = np.exp(at * post[f"noise_{t}"].values.ravel())
        rows.append(
            [
                label,
                Cell(interval(*np.quantile(f, [0.5, 0.05, 0.95])), "num"),
                "collapses scatter more than near-lossless rows"
                if t == "low_bits"
                else "per-channel results scatter more across studies than grouped ones",
            ]
        )
    if "nu" in post:
        nu = post["nu"].values.ravel()
        rows.append(
            [
                "Student-t degrees of freedom",
                Cell(interval(*np.quantile(nu, [0.5, 0.05, 0.95])), "num"),
                "below 2: heavy tails, a few rows far from the mean structure are expected",
            ]
        )
    return table(["noise", "posterior median [90%]", "meaning"], rows)


def render(ctx: Context) -> Section:
    body = (
        "<p>Effects are on the log-degradation scale: +0.69 doubles the expected Δ, −0.69 halves it. "
        "Each grouping's levels share a population N(0, sd); the fitted sd measures how much the levels "
        "really differ, and sets how strongly a level with few rows is pulled to the average.</p>"
        "<h3>Scaling-law exponents</h3>"
        + F.safe("the exponent table", _exponent_table, ctx)
        + F.safe("the exponent plot", _exponent_figure, ctx)
        + "<h3>Observation noise on ln(Δ + 0.01)</h3>"
        + F.safe("the noise table", _noise_table, ctx)
        + "<h3>Pooling: population spread of each effect</h3>"
        + F.safe("the pooling table", _pooling_table, ctx)
        + F.safe("the forest plots", _forests, ctx)
    )
    return Section("learned", "4. What the model learned", body)
