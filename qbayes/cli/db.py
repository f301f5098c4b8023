"""``qbayes db``: validate, summarise, merge and import databases."""

from __future__ import annotations

from pathlib import Path

import click

from qbayes.db import store
from qbayes.errors import QBayesError
from qbayes.resources import database_dir


@click.group()
def db():
    """Inspect and build the quantization results database."""


@db.command()
@click.argument("paths", nargs=-1, type=click.Path())
def validate(paths):
    """Check database directories (default: the shipped database) against the schema.

    Exits 0 when every database is valid; otherwise lists every problem and exits 1."""
    failed = False
    for path in paths or (database_dir(),):
        try:
            d = store.load(path)
        except store.InvalidDatabase as exc:
            failed = True
            click.echo(f"{path}: INVALID, {len(exc.problems)} problem(s)", err=True)
            for p in exc.problems:
                click.echo(f"  {p}", err=True)
            continue
        except QBayesError as exc:
            failed = True
            click.echo(f"{path}: INVALID: {exc}", err=True)
            continue
        click.echo(
            f"{path}: valid ({d.models.height} models, {d.results.height} results, {d.accuracy.height} accuracies, "
            f"{d.features.height} features, {d.failures.height} failures)"
        )
    if failed:
        raise SystemExit(1)


@db.command()
@click.argument("path", required=False, type=click.Path())
def summary(path):
    """Counts by family, method, bits, evaluation set and source (default: the shipped database)."""
    from qbayes.db.summary import render

    render(store.load(path or database_dir()), title=str(path) if path else "the shipped database")


@db.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path())
@click.option(
    "--into", "into", required=True, type=click.Path(), help="database directory to merge into (created if absent)"
)
@click.option(
    "--prefer",
    type=click.Choice(["newest"]),
    default=None,
    help="resolve conflicting rows by keeping the newest (default: refuse and list them)",
)
def merge(shards, into, prefer):
    """Merge SHARD directories into a database, deduplicating on the natural key.

    Nothing is written when any shard is invalid or rows conflict (unless --prefer)."""
    from qbayes.db.merge import merge as merge_dbs

    target = Path(into)
    dbs = [store.load(target)] if target.exists() else []
    n_before = dbs[0].results.height if dbs else 0
    dbs += [store.load(s) for s in shards]
    merged, dropped = merge_dbs(dbs, prefer=prefer)
    store.save(merged, target)
    for c in dropped:
        click.echo(f"conflict resolved (kept newest): {c}", err=True)
    click.echo(
        f"{target}: {merged.results.height} results ({merged.results.height - n_before} new), "
        f"{merged.models.height} models, {merged.features.height} features, {merged.failures.height} failures"
    )


@db.command("import-published")
@click.argument("csv", type=click.Path())
@click.option("--meta", "meta", required=True, type=click.Path(), help="model_meta.csv")
@click.option(
    "--released",
    "released",
    type=click.Path(),
    help="release_dates.csv (model, released, source): each model's first public release",
)
@click.option(
    "--accuracy",
    "accuracy",
    type=click.Path(),
    help="published_accuracy.csv: task accuracies of the same and further models (the accuracy table)",
)
@click.option("--out", "out", required=True, type=click.Path(), help="database directory to write")
def import_published(csv, meta, released, accuracy, out):
    """Import published perplexity (and task accuracy) tables into a database directory.

    Nothing is written when any row is refused."""
    from qbayes.db.published import import_published as do_import
    from qbayes.db.published_accuracy import with_accuracy

    for p in (csv, meta, released, accuracy):
        if p is not None and not Path(p).is_file():
            raise QBayesError(f"{p}: no such file")
    d = do_import(csv, meta, released)
    if accuracy is not None:
        d = with_accuracy(d, accuracy)
    store.save(d, out)
    click.echo(
        f"{out}: wrote {d.results.height} results and {d.accuracy.height} accuracies for {d.models.height} models"
    )
