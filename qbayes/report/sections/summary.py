"""Section 0: what the fit can answer, for the practitioner who reads one screen: the
families, methods and kinds of format it was fitted on and the ranges it spans, its
held-out error and coverage (one sentence per validation scheme), and its predictions for
a model of the data at a few bit widths beside what was measured. Hashes close it; the
statistics follow in the other sections."""

from __future__ import annotations

import math

import polars as pl

from qbayes.evaluation.summary import ValidationSummary
from qbayes.report import decisions as dec
from qbayes.report.context import Context
from qbayes.report.html import Cell, Section, esc, interval, num, table

SCHEMES = {"lofo": "Leaving one family out", "forward": "Predicting each family from the families released before it"}
SHOWN_BITS = (2.0, 3.0, 4.0, 8.0)


def _levels(ctx: Context, column: str) -> str:
    counts = ctx.data.get_column(column).drop_nulls().value_counts().sort(["count", column], descending=[True, False])
    return ", ".join(f"{v} ({n})" for v, n in zip(counts[column].to_list(), counts["count"].to_list()))


def _span(ctx: Context, column: str) -> tuple[float, float]:
    s = ctx.data.get_column(column).drop_nulls()
    return float(s.min()), float(s.max())


def coverage_text(ctx: Context) -> str:
    """What the fit was fitted on, as a paragraph."""
    p, t, b = _span(ctx, "params_b"), _span(ctx, "train_tokens_b"), _span(ctx, "bits")
    return (
        f"<p>Fitted on <b>{ctx.data.height}</b> measured results. <b>Families</b> (rows): "
        f"{esc(_levels(ctx, 'family'))}. <b>Methods</b>: {esc(_levels(ctx, 'method'))}. "
        f"<b>Kinds of weight format</b>: {esc(_levels(ctx, 'w_kind'))}. <b>Evaluation sets</b>: "
        f"{esc(_levels(ctx, 'eval_set'))}.</p>"
        f"<p>Sizes {p[0]:g}–{p[1]:g}B parameters, training tokens {t[0]:,.0f}–{t[1]:,.0f}B, "
        f"{b[0]:.2f}–{b[1]:.2f} bits per weight. A query outside these ranges is extrapolated "
        "(<code>outside_*</code> columns of <code>qbayes predict</code>); a family, method or evaluation "
        "set not listed is predicted from the fitted population, with wider intervals.</p>"
    )


def validation_text(validation: ValidationSummary | list[ValidationSummary] | None, model_name: str) -> str:
    """One sentence per validation scheme: held-out median error and 90% coverage of the
    model ``model_name`` (the fit's), or of the model validated first when the file lacks it."""
    if not validation:
        return (
            "<p>No held-out validation was given: run <code>qbayes validate --json FILE</code> and pass it "
            "with <code>--validation FILE</code> to see how well it predicts families it has not seen.</p>"
        )
    sentences = []
    for v in validation if isinstance(validation, list) else [validation]:
        if not v.overall:
            continue
        model = next((m for m in v.overall if m.model == model_name), v.overall[0])
        s = model.scores
        at3 = next((r.scores for r in v.overall_3bits if r.model == model.model), None)
        extra = f" ({num(at3.mdae)} at 3 bits or more)" if at3 is not None and not math.isnan(at3.mdae) else ""
        sentences.append(
            f"{SCHEMES.get(v.settings.scheme, v.settings.scheme)}, the {esc(model.model)} model's median "
            f"error is {num(s.mdae)} nats per token{extra} over {s.n or '?'} held-out results, and its 90% "
            f"intervals cover {s.cov90:.0%} of them."
        )
    return "<p>" + " ".join(sentences) + "</p>"


def known_model_table(ctx: Context, sc: dec.Scenario) -> str:
    """Predicted perplexity of a real model of the data at a few bit widths with the
    scenario's method, beside the measured value where the data have it."""
    model = sc.model
    rows_of = ctx.data.filter((pl.col("model") == model) & (pl.col("eval_set") == sc.eval_set))
    fp16 = sc.fp16_ppl(sc.model_params)
    q = dec.queries(sc, [sc.model_params], SHOWN_BITS).with_columns(pl.lit(model).alias("model"))
    pred = ctx.predictor.predict(q)
    rows = []
    for r in pred.iter_rows(named=True):
        seen = rows_of.filter(
            (pl.col("method") == sc.method) & (pl.col("w_bits") == r["w_bits"]) & (pl.col("group_size") == dec.GROUP)
        )
        measured = seen.select((pl.col("fp16_ppl") * pl.col("delta").exp()).median()).item() if seen.height else None
        rows.append(
            [
                Cell(f"{r['w_bits']:g}", "num"),
                Cell(interval(r["ppl_q50"], r["ppl_q05"], r["ppl_q95"]), "num"),
                Cell(num(measured) if measured is not None else "not measured", "num"),
            ]
        )
    caption = (
        f"{model} ({sc.model_params:g}B, fp16 perplexity {num(fp16)} on {sc.eval_set}) with {sc.method}, "
        f"group size {dec.GROUP}: predicted median [90% interval], and the measured perplexity where the data "
        "hold it (median over studies)."
    )
    return table(["weight bits", "predicted perplexity", "measured"], rows, caption=caption)


def render(ctx: Context) -> Section:
    sc = dec.scenario(ctx.fit, ctx.scenario)
    info = ctx.fit.info
    body = (
        coverage_text(ctx)
        + validation_text(ctx.validation, ctx.fit.spec.name)
        + "<h3>A model you may know</h3>"
        + known_model_table(ctx, sc)
        + "<p>To choose a format for your model: <code>qbayes choose --budget-gib 24 --family FAMILY "
        "--candidate MODEL:PARAMS_B:FP16_PPL --format Q4_K_M --format Q5_K_M</code>. The sections below "
        "hold the statistics: data, convergence, predictive checks, what the model learned, validation "
        "and decisions.</p>"
        + f'<p class="muted">Model {esc(ctx.fit.spec.name)}; data hash {esc(info.data_hash)}; spec hash '
        f"{esc(ctx.fit.spec.hash)}; posterior {esc(ctx.fit.posterior_checksum or '?')}.</p>"
    )
    return Section("summary", "What this fit can answer", body)
