"""``qbayes suggest``: which runs to collect next (docs/suggest.md)."""

from __future__ import annotations

from pathlib import Path

import click

from qbayes.cli.options import fit_option, load_fit, load_observed, new_level_option, observed_option
from qbayes.cli.predict import SUFFIXES, _read_queries, _write_atomic
from qbayes.errors import QBayesError
from qbayes.suggest.gpucost import DEVICE_TFLOPS, REFERENCE_DEVICE

SHOWN = 20  # chosen runs printed; the output file has them all


@click.command()
@click.option(
    "--targets",
    "targets_path",
    required=True,
    type=click.Path(),
    help="what you want to predict well: queries as for `qbayes predict` (.csv or .parquet; "
    "fp16_ppl optional; optional weight column)",
)
@click.option(
    "--candidates",
    "candidates_path",
    type=click.Path(),
    help="runs you could collect, .csv or .parquet: query columns without fp16_ppl (optional: gpu_hours, eval_tokens)",
)
@click.option(
    "--grid", "grid_path", type=click.Path(), help="or: a collection grid (collectors/NAME.toml) crossed with --models"
)
@click.option(
    "--models",
    "models_path",
    type=click.Path(),
    help="collection manifest (path, family, name) with params_b (optional: train_tokens_b, arch)",
)
@fit_option
@click.option("--budget-gpu-hours", type=float, help="GPU hours the chosen runs may use together")
@click.option(
    "--top",
    type=click.IntRange(1),
    help="at most this many runs chosen (default: as many as the budget allows, or 10 without a budget)",
)
@click.option(
    "--device",
    type=click.Choice(sorted(DEVICE_TFLOPS), case_sensitive=False),
    default=REFERENCE_DEVICE,
    show_default=True,
    help="GPU the cost estimates are for",
)
@click.option(
    "--output", "output_path", required=True, type=click.Path(), help="every candidate, ranked, .csv or .parquet"
)
@new_level_option
@click.option("--draws", type=click.IntRange(50), default=1000, show_default=True, help="posterior draws used")
@click.option("--seed", type=int, default=0, show_default=True)
@observed_option
def suggest(
    targets_path,
    candidates_path,
    grid_path,
    models_path,
    fit_path,
    budget_gpu_hours,
    top,
    device,
    output_path,
    new_level,
    draws,
    seed,
    observed_path,
):
    """Rank candidate runs by how much measuring each would sharpen the predictions of the
    targets, per GPU hour, and choose a batch under a budget.

    A run's value is the expected reduction of the targets' posterior variance of
    ln(delta + 0.01) if it were measured (Gaussian approximation of the posterior draws);
    the batch is chosen greedily, each choice discounting what later runs would repeat."""
    import polars as pl

    from qbayes.api.suggest import suggest_table
    from qbayes.model.predict import Predictor
    from qbayes.suggest.ranking import grid_candidates

    out = Path(output_path)
    if out.suffix not in SUFFIXES:
        raise QBayesError(f"{out}: output must end in .csv or .parquet")
    if budget_gpu_hours is not None and not budget_gpu_hours > 0:
        raise QBayesError(f"--budget-gpu-hours must be > 0, got {budget_gpu_hours:g}")
    if bool(candidates_path) == bool(grid_path):
        raise QBayesError("give the candidate runs with --candidates FILE or with --grid GRID --models MANIFEST")
    if bool(grid_path) != bool(models_path):
        raise QBayesError(
            "--grid and --models go together: the grid's configurations crossed with the manifest's models"
        )
    raw_targets = _read_queries(Path(targets_path))
    if grid_path:
        from qbayes.collect.grid import load_grid

        raw = grid_candidates(load_grid(grid_path), _read_queries(Path(models_path)), where=str(models_path))
        where = f"{grid_path} x {models_path}"
    else:
        raw = _read_queries(Path(candidates_path))
        where = str(candidates_path)
    fit = load_fit(fit_path)
    observed = load_observed(observed_path)
    with _progress() as bar:
        task = bar.add_task("choosing runs", total=None)
        result = suggest_table(
            Predictor(fit, n_draws=draws, seed=seed),
            raw_targets,
            raw,
            targets_where=str(targets_path),
            candidates_where=where,
            budget_gpu_hours=budget_gpu_hours,
            top=top,
            device=device,
            new_level=new_level,
            observed=observed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for line in result.notes:
        click.echo(line, err=True)
    table = result.table
    _write_atomic(table, out)
    _print(table.filter(pl.col("chosen")), result.ranking, budget_gpu_hours, device)
    click.echo(f"wrote {table.height} ranked candidates to {out}")


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _label(r: dict) -> str:
    """A run as people name it, from the candidate's own columns (a format name, a grid
    configuration, or method, bits and group size)."""
    if r.get("format"):
        return f"{r['model']} {r['format']}" + (f" {r['method']}" if r.get("method") else "") + f" on {r['eval_set']}"
    if r.get("grid_config"):
        return f"{r['model']} {r['method']} {r['grid_config']} on {r['eval_set']}"
    group = "per-channel" if r.get("group_size") in (None, "", "-1", -1) else f"g{r['group_size']}"
    return f"{r['model']} {r['method']} w{r['w_bits']} {group} on {r['eval_set']}"


def _print(chosen, ranking, budget, device) -> None:
    from rich.console import Console
    from rich.table import Table

    sel = ranking.selection
    start = max(sel.start, 1e-300)
    t = Table(
        title=f"Runs to collect next ({chosen.height} chosen; GPU hours on {device})",
        caption=f"... and {chosen.height - SHOWN} more in the output" if chosen.height > SHOWN else None,
    )
    for c in ("#", "run", "GPU h", "variance removed", "alone"):
        t.add_column(c, justify="left" if c == "run" else "right")
    for r in chosen.head(SHOWN).iter_rows(named=True):
        t.add_row(
            str(r["choice_order"]),
            _label(r),
            f"{r['cost_at_choice']:.2f}",
            f"{r['gain_at_choice'] / start:.1%}",
            f"{r['var_reduction_share']:.1%}",
        )
    Console().print(t)
    spent = float(sel.cost.sum())
    left = sel.left[-1] if sel.left.size else sel.start
    click.echo(
        f"targets' posterior variance of ln(delta + shift), weighted sum: {sel.start:.4g} -> {left:.4g} "
        f"({1 - left / start:.1%} less) for {spent:.2f} GPU hours" + (f" of {budget:g}" if budget is not None else "")
    )
    click.echo(
        "variance removed: share of the targets' variance the run removes given the runs above it; "
        "alone: if it were the only run"
    )
