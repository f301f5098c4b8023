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
    from qbayes import resources
    from qbayes.model.accuracy import fitfile as accuracy_fitfile
    from qbayes.report import document as rep
    from qbayes.report import validation
    from qbayes.report.decisions import scenario as read_scenario

    fit = load_fit(fit_path)
    val = [validation.load(p) for p in validation_paths] or None
    if scenario is not None:
        read_scenario(fit, scenario)  # refuses a family the data lack before the work starts
    acc_path = accuracy_fit_path or resources.shipped_accuracy_fit()
    accuracy = accuracy_fitfile.load(acc_path) if acc_path is not None else None
    html = rep.build(fit, val, n_draws=draws, seed=seed, scenario=scenario, accuracy=accuracy)
    path = rep.write(html, out)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
