"""``qbayes validate``: leave-one-family-out cross-validation against baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from qbayes.cli.options import database_options, load_databases
from qbayes.cli.predict import SUFFIXES, _write_atomic
from qbayes.errors import QBayesError
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig


@click.command()
@database_options
@click.option(
    "--target",
    type=click.Choice(["delta", "accuracy"]),
    default="delta",
    show_default=True,
    help="delta: the perplexity model; accuracy: task accuracy given the degradation (docs/accuracy.md)",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("hierarchical", "pooled"),
    show_default=True,
    help="Bayesian model spec(s) to validate (repeatable)",
)
@click.option(
    "--baseline",
    "baselines",
    multiple=True,
    default=("cell_median", "scaling_law_ls", "random_forest"),
    show_default=True,
)
@click.option(
    "--scheme",
    type=click.Choice(["lofo", "forward"]),
    default="lofo",
    show_default=True,
    help="lofo: predict each family from all others; forward: from the families released before it",
)
@click.option("--family", "families", multiple=True, help="hold out only these families (default: every family)")
@click.option("--draws", type=click.IntRange(10), default=500, show_default=True)
@click.option("--tune", type=click.IntRange(10), default=500, show_default=True)
@click.option("--chains", type=click.IntRange(1), default=4, show_default=True)
@click.option("--seed", type=int, default=SampleConfig().seed, show_default=True)
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True)
@click.option(
    "--target-accept",
    type=click.FloatRange(0.5, 0.999),
    default=0.9,
    show_default=True,
    help="NUTS target acceptance of the fold fits (scored on predictions, not gated on divergences)",
)
@click.option(
    "--rows",
    type=click.Choice(["published", "collected", "all"]),
    default=None,
    help="which database rows to validate on (default: the first model's `rows`)",
)
@click.option(
    "--reveal",
    "reveals",
    multiple=True,
    type=click.IntRange(0),
    default=(0,),
    show_default=True,
    help="rows each held-out model reveals (repeatable: --reveal 0 --reveal 1 ...): the baselines train on "
    "them, the Bayesian models condition on them as predict --observed does; every K is scored on the rows "
    "hidden at the largest K (docs/observed.md)",
)
@click.option(
    "--reveal-rule",
    type=click.Choice(["nearest4", "rtn"]),
    default="nearest4",
    show_default=True,
    help="which rows are revealed: nearest 4 bits per weight of the family's most common method, or RTN rows",
)
@click.option("--json", "json_path", type=click.Path(), help="also write the results as JSON here")
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(),
    help="also write every held-out row with each model's predictive quantiles (.csv or .parquet)",
)
def validate(
    data,
    exclude_family,
    include_suspect,
    target,
    models,
    baselines,
    scheme,
    families,
    draws,
    tune,
    chains,
    seed,
    sampler,
    target_accept,
    rows,
    reveals,
    reveal_rule,
    json_path,
    predictions_path,
):
    """Hold out each family in turn, fit on the rest, and score predictions for it.

    Prints overall and per-family scores, then the median-error gap between the first --model
    and every other model with a 90% paired-bootstrap interval (rows resampled within families)."""
    from rich.console import Console
    from rich.table import Table

    from qbayes.evaluation import crossval
    from qbayes.evaluation.baselines import BASELINES
    from qbayes.evaluation.summary import METRICS, ValidationSettings
    from qbayes.model.fit import FitOptions
    from qbayes.model.spec import load_spec
    from qbayes.model.table import training_table

    if target == "accuracy":
        from qbayes.cli.accuracy import validate_accuracy

        if predictions_path or exclude_family or include_suspect:
            raise QBayesError("--predictions, --exclude-family and --include-suspect are for --target delta")
        return validate_accuracy(
            data,
            scheme,
            families,
            SampleConfig(
                draws=draws,
                tune=tune,
                chains=chains,
                seed=seed,
                target_accept=target_accept,
                progress=False,
                extensions=0,
            ),
            sampler,
            json_path,
        )
    for b in baselines:
        if b not in BASELINES:
            raise BASELINES.unknown(b)
    if predictions_path and Path(predictions_path).suffix not in SUFFIXES:
        raise QBayesError(f"--predictions {predictions_path}: output must end in .csv or .parquet")
    specs = [load_spec(m) for m in models]
    rows = rows or (specs[0].rows if specs else "published")
    db = load_databases(data)
    table = training_table(db, exclude_families=tuple(exclude_family), include_suspect=include_suspect, rows=rows)
    folds = crossval.make_folds(
        table["family"], scheme=scheme, released=crossval.family_release(db.models), only=families
    )
    opts = FitOptions(
        sampler=sampler,
        # fold fits are scored on their predictions, not gated on R-hat: no extra chains
        sample=SampleConfig(
            draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept, progress=False, extensions=0
        ),
    )
    console = Console(stderr=True)
    with console.status("cross-validating") as status:
        results = crossval.run(
            table,
            bayes_models=models,
            baselines=baselines,
            opts=opts,
            folds=folds,
            seed=seed,
            progress=lambda m: status.update(m),
            reveals=sorted(set(reveals)),
            reveal_rule=reveal_rule,
        )
    settings = ValidationSettings(
        scheme=scheme,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        sampler=sampler,
        target_accept=target_accept,
        rows=table.height,
        row_kind=rows,
        families=tuple(f.family for f in folds),
        folds={f.family: f.train for f in folds},
    )
    reveals = sorted(set(reveals))
    reference = crossval.reveal_name(models[0], reveals[-1], reveals) if models else None
    summary = crossval.summarise(results, settings, reference=reference)

    out = Console()
    name = {"lofo": "Leave-one-family-out", "forward": "Forward (from earlier families)"}[scheme]
    for title, rows, names in (
        ("overall", summary.overall, ("model",)),
        ("rows of 3 or more bits", summary.overall_3bits, ("model",)),
        ("per held-out family", summary.per_family, ("family", "model")),
    ):
        t = Table(title=f"{name} validation: {title} (delta in nats/token)", title_justify="left")
        for c in (*names, "n", *METRICS):
            t.add_column(c, justify="left" if c in names else "right")
        for r in rows:
            values = (r.scores.n, *(getattr(r.scores, m) for m in METRICS))
            t.add_row(
                *(getattr(r, c) for c in names),
                *("—" if v is None or math.isnan(v) else str(v) if isinstance(v, int) else f"{v:.4f}" for v in values),
            )
        out.print(t)
    if summary.gaps:
        ref = summary.gaps[0].reference
        level = summary.gaps[0].level
        t = Table(
            title=f"MdAE of {ref} minus each model's (negative: {ref} better), with a {level:.0%} interval "
            "from resampling held-out rows within families",
            title_justify="left",
        )
        for c in ("model", "gap", "lo", "hi", f"P({ref} better)"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for g in summary.gaps:
            t.add_row(g.model, *(f"{v:+.4f}" for v in (g.gap, g.lo, g.hi)), f"{g.p_reference_better:.2f}")
        out.print(t)
    if reveals != [0]:
        t = Table(
            title=f"Revealed rows per held-out model (rule {reveal_rule}): error and 90% width against K, "
            f"on the rows hidden at K = {reveals[-1]}",
            title_justify="left",
        )
        for c in ("model", "K", "rows", "n", "MdAE", "median 90% width", "90% cov."):
            t.add_column(c, justify="left" if c in ("model", "rows") else "right")
        for r in crossval.reveal_scores(results, reveals):
            t.add_row(r.model, str(r.k), r.rows, str(r.n), f"{r.mdae:.4f}", f"{r.width90:.4f}", f"{r.cov90:.2f}")
        out.print(t)
    if json_path:
        from qbayes.atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(summary.to_dict(), indent=1, allow_nan=False))
        click.echo(f"wrote {json_path}")
    if predictions_path:
        preds = crossval.predictions_table(results)
        _write_atomic(preds, Path(predictions_path))
        click.echo(f"wrote {predictions_path} ({preds.height} rows: held-out rows x models)")
