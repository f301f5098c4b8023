"""``qbayes fit-accuracy``, and the task-accuracy options that predict and choose share
(``--task``, ``--fp16-acc``, ``--accuracy-fit``)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from qbayes import resources
from qbayes.cli.options import database_options, fit_option, load_databases, load_fit
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
    from qbayes.model.accuracy import fitfile, rows
    from qbayes.model.accuracy.fit import AccuracyFitOptions, fit_rows
    from qbayes.model.predict import Predictor
    from qbayes.model.samplers import SampleConfig
    from qbayes.model.tasks import load as load_tasks

    path = Path(out)
    if path.suffix != ".nc":
        raise QBayesError(f"{path}: an accuracy fit file ends in .nc")
    ppl_path = fit_path or resources.shipped_fit()
    ppl_fit = load_fit(fit_path)
    db = load_databases(data)
    tasks = load_tasks()
    data_rows = rows.build(
        db, tasks, Predictor(ppl_fit, seed=seed), exclude_families=exclude_family, include_suspect=include_suspect
    )
    click.echo(f"{data_rows.rows.height} task accuracies of {data_rows.configs.height} configurations", err=True)
    opts = AccuracyFitOptions(
        sampler=sampler,
        sample=SampleConfig(draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept),
        exclude_families=tuple(exclude_family),
    )
    fit = fit_rows(data_rows, tasks, ppl_fit, _relative(ppl_path), opts)
    fitfile.save(fitfile.thin(fit, draws=keep, seed=seed), path)
    click.echo(f"wrote {path}: {fitfile.describe(fit)}")
    click.echo(fit.info.convergence.line())
    for f in fit.info.convergence.failures:
        click.echo(f"WARNING: {f}", err=True)


def _relative(path) -> str:
    """The perplexity fit's path as recorded: relative to the shipped data where it is the shipped one."""
    p = Path(path).resolve()
    shipped = resources.shipped_fit()
    return f"data/{p.name}" if shipped is not None and p == shipped.resolve() else str(path)


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


def validate_accuracy(data, scheme, families, sample, sampler, json_path) -> None:
    """``qbayes validate --target accuracy``: fit per fold, print per-task and per-family
    scores (points) of the model and the baselines, optionally write them as JSON."""
    import json
    import math

    from rich.console import Console
    from rich.table import Table

    from qbayes.evaluation import accuracy as acc_cv
    from qbayes.evaluation import crossval
    from qbayes.model.accuracy.fit import AccuracyFitOptions
    from qbayes.model.accuracy.rows import paired
    from qbayes.model.tasks import load as load_tasks

    db = load_databases(data)
    tasks = load_tasks()
    fams = paired(db, tasks)["family"]
    folds = crossval.make_folds(fams, scheme=scheme, released=crossval.family_release(db.models), only=families)
    ppl_path = resources.shipped_fit()
    ppl_fit = load_fit(None)
    opts = AccuracyFitOptions(sampler=sampler, sample=sample)
    console = Console(stderr=True)
    with console.status("cross-validating accuracy") as status:
        results = acc_cv.run(db, tasks, ppl_fit, _relative(ppl_path), folds, opts, progress=status.update)
    v = acc_cv.summarise(results, scheme, folds)
    out = Console()
    name = {"lofo": "Leave-one-family-out", "forward": "Forward (from earlier families)"}[scheme]
    for title, recs, key in (("per task", v.per_task, "task"), ("per held-out family", v.per_family, "family")):
        t = Table(title=f"{name} validation of task accuracy, {title} (points)", title_justify="left")
        for c in (key, "model", "n", "MdAE", "cov90", "CRPS"):
            t.add_column(c, justify="left" if c in (key, "model") else "right")
        for r in sorted(recs, key=lambda r: (r.task != "overall", r.task)):
            s = r.scores
            t.add_row(
                r.task, r.model, str(s.n), *("—" if math.isnan(x) else f"{x:.2f}" for x in (s.mdae, s.cov90, s.crps))
            )
        out.print(t)
    for fam, line in v.convergence.items():
        click.echo(f"fold {fam}: {line}", err=True)
    if json_path:
        from qbayes.atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(v.to_dict(), indent=1, allow_nan=True))
        click.echo(f"wrote {json_path}")
