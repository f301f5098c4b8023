"""``qbayes fit-accuracy``, and the task-accuracy options that predict and choose share
(``--task``, ``--fp16-acc``, ``--accuracy-fit``)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from qbayes import resources
from qbayes.cli.options import database_options, fit_option, load_fit
from qbayes.errors import QBayesError


@click.command("fit-accuracy")
@database_options
@fit_option
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="accuracy fit file to write (.nc)")
@click.option("--draws", type=click.IntRange(50), default=1500, show_default=True, help="draws per chain")
@click.option("--tune", type=click.IntRange(50), default=1000, show_default=True, help="tuning steps per chain")
@click.option("--chains", type=click.IntRange(1), default=4, show_default=True)
@click.option("--seed", type=int, default=20261207, show_default=True)
@click.option("--sampler", default="nutpie", show_default=True)
@click.option("--target-accept", type=click.FloatRange(0.5, 0.999), default=0.98, show_default=True)
@click.option(
    "--keep",
    type=click.IntRange(100),
    default=1000,
    show_default=True,
    help="posterior draws written (in all, single precision; convergence is checked on every draw)",
)
def fit_accuracy(
    data, exclude_family, include_suspect, fit_path, out, draws, tune, chains, seed, sampler, target_accept, keep
):
    """Fit task accuracy given the degradation to the database's accuracy rows.

    Each configuration's degradation comes from the perplexity fit (--fit, default the
    shipped one) or from the perplexities its source prints. The shipped accuracy fit is
    remade with `qbayes fit-accuracy --out data/accuracy-fit.nc` (after the shipped
    perplexity fit changes)."""
    from qbayes.api import fit as api
    from qbayes.model.accuracy import fitfile

    path = Path(out)
    if path.suffix != ".nc":
        raise QBayesError(f"{path}: an accuracy fit file ends in .nc")
    load_fit(fit_path)  # says which perplexity fit answers, and refuses a missing one first
    fit = api.fit_accuracy(
        data,
        fit=fit_path,
        exclude_families=exclude_family,
        include_suspect=include_suspect,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        sampler=sampler,
        target_accept=target_accept,
    )
    click.echo(f"{fit.info.n_rows} task accuracies of {fit.info.n_configs} configurations", err=True)
    fitfile.save(fitfile.thin(fit, draws=keep, seed=seed), path)
    click.echo(f"wrote {path}: {fitfile.describe(fit)}")
    click.echo(fit.info.convergence.line())
    for f in fit.info.convergence.failures:
        click.echo(f"WARNING: {f}", err=True)


def accuracy_options(f):
    """``--task``, ``--fp16-acc`` and ``--accuracy-fit``."""

    @click.option("--task", help="predict accuracy on this lm-eval task too (data/tasks.csv), e.g. mmlu")
    @click.option("--fp16-acc", type=float, help="the unquantized model's accuracy on --task, percent (e.g. 65.3)")
    @click.option(
        "--accuracy-fit",
        "accuracy_fit_path",
        type=click.Path(dir_okay=False),
        help="accuracy fit from `qbayes fit-accuracy` [default: the shipped one]",
    )
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def check_task_flags(task, fp16_acc) -> None:
    if (task is None) != (fp16_acc is None):
        raise QBayesError("--task and --fp16-acc go together: the task and the unquantized model's accuracy on it")


def load_accuracy(path, *, draws: int, seed: int, ppl_fit):
    """The accuracy predictor of ``path`` (default: the shipped fit); says on stderr which
    fit answers, and warns when it was built on another perplexity fit than ``ppl_fit``."""
    from qbayes.model.accuracy import fitfile
    from qbayes.model.accuracy.predict import AccuracyPredictor

    if path is None:
        path = resources.shipped_accuracy_fit()
        if path is None:
            raise QBayesError(
                "no --accuracy-fit given and this qbayes ships none (data/accuracy-fit.nc); "
                "make one with `qbayes fit-accuracy` and pass it with --accuracy-fit"
            )
    fit = fitfile.load(path)
    click.echo(f"{fitfile.describe(fit)} [{path}]", err=True)
    note = fitfile.other_perplexity_fit(fit, ppl_fit.info.data_hash)
    if note is not None:
        click.echo(note, err=True)
    return AccuracyPredictor(fit, n_draws=draws, seed=seed)


def print_accuracy_validation(v, scheme: str, json_path) -> None:
    """``qbayes validate --target accuracy``'s output: per-task and per-family scores
    (points) of the model and the baselines (qbayes.api.validate.AccuracyValidation),
    optionally written as JSON."""
    import json
    import math

    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from qbayes.api.validate import SCHEME_NAMES

    out = Console()
    name = SCHEME_NAMES[scheme]
    for title, table, key in (("per task", v.per_task, "task"), ("per held-out family", v.per_family, "family")):
        t = Table(title=f"{name} validation of task accuracy, {title} (points)", title_justify="left")
        for c in (key, "model", "n", "MdAE", "cov90", "CRPS"):
            t.add_column(c, justify="left" if c in (key, "model") else "right")
        for r in table.sort(pl.col(key) != "overall", key).iter_rows(named=True):
            t.add_row(
                r[key],
                r["model"],
                str(r["n"]),
                *("—" if x is None or math.isnan(x) else f"{x:.2f}" for x in (r["mdae"], r["cov90"], r["crps"])),
            )
        out.print(t)
    for fam, line in v.convergence.items():
        click.echo(f"fold {fam}: {line}", err=True)
    if json_path:
        from qbayes.atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(v.record.to_dict(), indent=1, allow_nan=True))
        click.echo(f"wrote {json_path}")
