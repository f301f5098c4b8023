"""``qbayes compare A B``: how much two options differ, as one would measure them."""

from __future__ import annotations

import click

from qbayes.cli.choose import Flags, option_flags, ppl_text, read_flags


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
    from qbayes.api.choose import compare_options

    flags = Flags(**flags)
    predictor, cands, grid, observed = read_flags(flags)
    c = compare_options(predictor, cands, grid, first, second, tolerance=flags.tolerance, observed=observed)
    for line in c.notes:
        click.echo(line, err=True)
    ra, rb = c.options.row(0, named=True), c.options.row(1, named=True)
    click.echo(f"{c.first} minus {c.second}, perplexity on {ra['eval_set']} as you would measure each:")
    for r, label in ((ra, c.first), (rb, c.second)):
        click.echo(
            f"  {label}: median {ppl_text(r['ppl_q50'], r['fp16_ppl'])}, 90% "
            f"[{ppl_text(r['ppl_q05'], r['fp16_ppl'])}, {ppl_text(r['ppl_q95'], r['fp16_ppl'])}], "
            f"{r['memory_gb']:.2f} GB"
        )
    click.echo("  difference: " + ", ".join(f"{round(p * 100)}% {v:+.3g}" for p, v in c.difference.items()))
    click.echo(
        f"  relative difference: median {c.relative[0.5]:+.2%}, 90% [{c.relative[0.05]:+.2%}, {c.relative[0.95]:+.2%}]"
    )
    click.echo(
        f"  P({c.first} lower) {c.p_first_lower:.2f}; P(within {c.tolerance:g}% of each other) "
        f"{c.p_within_tolerance:.2f}; P({c.first} more than {c.tolerance:g}% higher) {c.p_first_higher:.2f}"
    )
