"""``qbayes zoo``: train the model zoo (small causal LMs at several sizes and token budgets)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from qbayes.cli.collect import INSTALL, _names
from qbayes.errors import QBayesError


@click.group("zoo")
def zoo():
    """Small language models trained here, for collection with features and known data."""


@zoo.command("train")
@click.option(
    "--grid",
    "grid",
    type=click.Path(path_type=Path),
    default=Path("collectors/zoo.toml"),
    show_default=True,
    help="Zoo recipe (architectures, sizes, corpus, budgets).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for checkpoints and the manifest.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Runs trained at once, one single-threaded process each.",
)
@click.option("--only", multiple=True, help="Only these runs, e.g. llama-s2 (repeat or comma-separate).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(grid, out, device, jobs, only, progress):
    """Train every (architecture, size) of the recipe, saving a checkpoint at each budget.

    Writes OUT/<arch>-<size>/t<budget>M/ (Hugging Face format with qbayes_train.json) and
    OUT/manifest.csv for `qbayes collect --models OUT/manifest.csv`. Finished runs are
    skipped, so rerunning resumes an interrupted zoo."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        raise QBayesError(f"qbayes zoo train needs torch and transformers; install the collect extra: {INSTALL}")
    from qbayes.collect.executors.base import offline_environment, quiet_transformers

    offline_environment()
    from qbayes.zoo.pool import train_all
    from qbayes.zoo.recipe import load_recipe

    recipe = load_recipe(grid)
    only = _names(only)
    names = [r.name for r in recipe.runs()]
    for name in only:
        if name not in names:
            from qbayes.errors import unknown

            raise unknown("run", name, names)
    quiet_transformers()
    summary = train_all(recipe, out, device=device, jobs=jobs, only=only, progress=progress)
    click.echo(
        f"{len(summary.trained)} run(s) trained, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed; manifest: {summary.manifest}"
    )
    if summary.failed:
        for line in summary.failed:
            click.echo(f"  failed: {line.splitlines()[0]}")
        raise SystemExit(1)


@zoo.command("analyze")
@click.option(
    "--data",
    "data",
    multiple=True,
    type=click.Path(),
    help="Database or shard directory holding zoo rows (repeatable: merged; default: the shipped data/).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports/zoo-analysis.html"),
    show_default=True,
    help="HTML page to write.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results as strict JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap, forests and permutations.")
@click.option(
    "--bootstrap",
    type=click.IntRange(10, 10000),
    default=200,
    show_default=True,
    help="Bootstrap resamples of checkpoints for the gamma intervals.",
)
@click.option("--trees", type=click.IntRange(5, 2000), default=150, show_default=True, help="Random forest size.")
def analyze(data, out, json_path, seed, bootstrap, trees):
    """Does degradation grow with D/N at fixed bits, and which features (Hessian, sharpness,
    SQNR, outliers) predict it beyond size and bits? Held-out: leave one architecture or one
    size out. Works on partial zoos (missing sizes or architectures are noted and skipped)."""
    from qbayes.atomic import atomic_path
    from qbayes.cli.options import load_databases
    from qbayes.zoo.analysis import analyze as run_analysis
    from qbayes.zoo.analysis_html import render, summary_lines
    from qbayes.zoo.analysis_result import Settings

    result, table = run_analysis(
        load_databases(data), settings=Settings(seed=seed, bootstrap=bootstrap, forest_trees=trees)
    )
    with atomic_path(out) as tmp:
        tmp.write_text(render(result, table), encoding="utf-8")
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(result.to_json() + "\n", encoding="utf-8")
    d = result.data
    click.echo(f"{d.rows} rows, {d.models} checkpoints ({', '.join(d.families)}; sizes {', '.join(d.sizes)})")
    for line in summary_lines(result):
        click.echo(f"- {line}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {out}" + (f" and {json_path}" if json_path else ""))
