"""``qbayes compare A B``: how much two options differ, as one would measure them."""

from __future__ import annotations

import click
import numpy as np

from qbayes.cli.choose import Flags, _label, option_flags, ppl_text, read_flags
from qbayes.errors import QBayesError
from qbayes.names import key

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def find_option(labels: list[str], models: list[str], text: str) -> int:
    """The option whose label is ``text`` (case and punctuation ignored), or, among the
    options of one model, whose label without the model name is; refuses none or several."""
    k = key(text)
    exact = [i for i, label in enumerate(labels) if key(label) == k]
    if len(exact) == 1:
        return exact[0]
    short = [i for i, (label, m) in enumerate(zip(labels, models)) if key(label.removeprefix(m)) == k]
    if len(short) == 1:
        return short[0]
    if short:
        raise QBayesError(
            f"option '{text}' is one of several models' ({', '.join(labels[i] for i in short)}); "
            "name it with its model, in quotes"
        )
    from qbayes.errors import suggest

    raise QBayesError(f"no option '{text}'{suggest(text, labels)}; the options are: {', '.join(labels)}")


@click.command()
@click.argument("first")
@click.argument("second")
@option_flags
def compare(first, second, **flags):
    """Compare two options, FIRST and SECOND, named as `qbayes choose` prints them (a
    format such as Q4_K_M, or 'Llama-3-8B GPTQ w4 g128'; the model may be left out when
    there is one candidate). Takes the same flags as choose, without the budget, and
    prints the distribution of their difference in perplexity as you would measure each
    (observation noise included)."""
    from qbayes.model import conditioning
    from qbayes.model.choose import scored_options

    flags = Flags(**flags)
    predictor, cands, grid, observed = read_flags(flags)
    notes: list[str] = []

    def on_conditioned(cond) -> None:
        notes.extend(conditioning.unmatched(observed, cond.rows.query) + conditioning.report(cond))

    scored = scored_options(predictor, cands, **grid.keywords(), observed=observed, on_conditioned=on_conditioned)
    for line in notes:
        click.echo(line, err=True)
    formats = grid.formats
    own_method = frozenset(f.name for f in formats if f.method)
    rows = list(scored.table.iter_rows(named=True))
    labels = [_label(r, own_method) for r in rows]
    a = find_option(labels, [r["model"] for r in rows], first)
    b = find_option(labels, [r["model"] for r in rows], second)
    if a == b:
        raise QBayesError(f"'{first}' and '{second}' are the same option, {labels[a]}")
    ra, rb = rows[a], rows[b]
    diff = scored.measured[:, a] - scored.measured[:, b]
    rel = scored.measured[:, a] / scored.measured[:, b] - 1
    tol = flags.tolerance / 100
    q = np.quantile(diff, QUANTILES)
    click.echo(f"{labels[a]} minus {labels[b]}, perplexity on {ra['eval_set']} as you would measure each:")
    for r, label in ((ra, labels[a]), (rb, labels[b])):
        click.echo(
            f"  {label}: median {ppl_text(r['ppl_q50'], r['fp16_ppl'])}, 90% "
            f"[{ppl_text(r['ppl_q05'], r['fp16_ppl'])}, {ppl_text(r['ppl_q95'], r['fp16_ppl'])}], "
            f"{r['memory_gb']:.2f} GB"
        )
    click.echo("  difference: " + ", ".join(f"{round(p * 100)}% {v:+.3g}" for p, v in zip(QUANTILES, q)))
    click.echo(
        f"  relative difference: median {np.median(rel):+.2%}, 90% [{np.quantile(rel, 0.05):+.2%}, "
        f"{np.quantile(rel, 0.95):+.2%}]"
    )
    click.echo(
        f"  P({labels[a]} lower) {np.mean(diff < 0):.2f}; P(within {flags.tolerance:g}% of each other) "
        f"{np.mean(np.abs(rel) <= tol):.2f}; P({labels[a]} more than {flags.tolerance:g}% higher) "
        f"{np.mean(rel > tol):.2f}"
    )
