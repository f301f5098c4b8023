"""``qbayes report``: the HTML report of a fit."""

from __future__ import annotations

import click

from qbayes.cli.options import fit_option, load_fit
from qbayes.report.context import DEFAULT_DRAWS


@click.command()
@fit_option
@click.option(
    "--validation",
    "validation_paths",
    type=click.Path(dir_okay=False),
    multiple=True,
    help="held-out results written by `qbayes validate --json PATH` (section 5); repeat it for "
    "both schemes (leave one family out, forward)",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default="reports/report.html",
    show_default=True,
    help="HTML file to write",
)
@click.option(
    "--draws",
    type=click.IntRange(50, 4000),
    default=DEFAULT_DRAWS,
    show_default=True,
    help="posterior draws used for predictive checks and predictions",
)
@click.option(
    "--scenario",
    help="family of the fit's data whose models the summary and the decisions section show "
    "[default: the family with the most rows]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed for the draw subsample and noise")
@click.option(
    "--accuracy-fit",
    "accuracy_fit_path",
    type=click.Path(dir_okay=False),
    help="accuracy fit for the task-accuracy section [default: the shipped one, data/accuracy-fit.nc]",
)
def report(fit_path, validation_paths, out, draws, scenario, seed, accuracy_fit_path):
    """Write a self-contained HTML report of a fit: data, convergence, posterior predictive
    checks, what the model learned, held-out validation and decisions.

    The file has its images inline and makes no network request: it opens from a mail
    attachment or an offline disk."""
    from qbayes.api.model import Model
    from qbayes.api.report import write_report

    path = write_report(
        Model(load_fit(fit_path)),
        out=out,
        validation=validation_paths,
        draws=draws,
        scenario=scenario,
        seed=seed,
        accuracy_path=accuracy_fit_path,
    )
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
