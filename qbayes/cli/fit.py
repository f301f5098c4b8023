"""``qbayes fit``: fit a model to one or more databases and save the posterior."""

from __future__ import annotations

import click

from qbayes.cli.options import database_options, load_databases, load_observed
from qbayes.errors import QBayesError
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig
from qbayes.model.spec import DEFAULT_MODEL
from qbayes.resources import CHECKOUT, SHIPPED_FIT

SHIP_DRAWS = 1000  # draws kept in the shipped posterior: predictive quantiles to ~0.01 on the log scale

CELLS_SHOWN = 5  # worst cells of the in-sample check printed after a fit
DEFAULTS = SampleConfig()  # one source for the sampling defaults


@click.command()
@database_options
@click.option(
    "--model",
    "model_name",
    default=DEFAULT_MODEL,
    show_default=True,
    help="model spec name (models/NAME.toml) or path to a spec TOML",
)
@click.option("--out", "out", type=click.Path(), default=None, help="fit file to write [default: fits/MODEL.nc]")
@click.option("--draws", type=click.IntRange(10), default=DEFAULTS.draws, show_default=True, help="draws per chain")
@click.option(
    "--tune", type=click.IntRange(10), default=DEFAULTS.tune, show_default=True, help="tuning steps per chain"
)
@click.option("--chains", type=click.IntRange(1), default=DEFAULTS.chains, show_default=True)
@click.option(
    "--extensions",
    type=click.IntRange(0),
    default=DEFAULTS.extensions,
    show_default=True,
    help="at most this many rounds of CHAINS fresh chains added while R-hat or ESS fall short of the bar "
    "(not with --chains 1)",
)
@click.option(
    "--seed",
    type=int,
    default=DEFAULTS.seed,
    show_default=True,
    help="integer seed (runs agree in distribution, not bit for bit; see README)",
)
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True, help="nutpie, pymc, numpyro or blackjax")
@click.option(
    "--target-accept",
    type=click.FloatRange(0.5, 0.999),
    default=DEFAULTS.target_accept,
    show_default=True,
    help="NUTS target acceptance: higher means smaller steps, fewer divergences, slower",
)
@click.option("--allow-bad-fit", is_flag=True, help="save and exit 0 even if convergence checks fail")
@click.option(
    "--rows",
    type=click.Choice(["published", "collected", "all"]),
    default=None,
    help="which database rows to fit: published, collected by `qbayes collect`, or all together "
    "[default: the model spec's `rows`]",
)
@click.option(
    "--observed",
    "observed_path",
    type=click.Path(),
    default=None,
    help="also fit rows you measured (the layout of `qbayes predict --observed`), as source "
    "'observed': the exact route that predict --observed approximates",
)
@click.option("--prior-check", is_flag=True, help="run a prior predictive check instead of fitting")
@click.option(
    "--ship",
    is_flag=True,
    help=f"also write the shipped posterior, data/{SHIPPED_FIT} of this checkout: the default model's fit "
    f"of the shipped database thinned to {SHIP_DRAWS} single-precision draws, which predict, choose and "
    "report use without --fit",
)
def fit(
    data,
    exclude_family,
    include_suspect,
    model_name,
    out,
    draws,
    tune,
    chains,
    extensions,
    seed,
    sampler,
    target_accept,
    allow_bad_fit,
    rows,
    observed_path,
    prior_check,
    ship,
):
    """Fit a hierarchical model of quantization degradation (no GPU, no torch)."""
    from rich.console import Console

    from qbayes.api.fit import model_spec
    from qbayes.model import fitfile
    from qbayes.model.fit import FitOptions, fit_database
    from qbayes.model.ppc_cells import check_cells

    console = Console(stderr=True)
    if ship and (data or exclude_family or include_suspect or rows or observed_path or model_name != DEFAULT_MODEL):
        raise QBayesError(
            f"--ship writes the posterior qbayes ships: the {DEFAULT_MODEL} model on the shipped "
            "database, so it takes no --data, --exclude-family, --include-suspect, --rows, --observed or --model"
        )
    ship_to = CHECKOUT / "data" / SHIPPED_FIT
    if ship and not ship_to.parent.is_dir():
        raise QBayesError(
            f"--ship writes into the checkout's data/ folder, and {ship_to.parent} is not there: "
            "run it from a clone of the qbayes repository"
        )
    spec = model_spec(model_name, rows)
    db = load_databases(data)
    observed = load_observed(observed_path)
    if prior_check:
        _prior_check(db, spec, seed)
        return
    opts = FitOptions(
        sampler=sampler,
        sample=SampleConfig(
            draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept, extensions=extensions
        ),
        exclude_families=tuple(exclude_family),
        include_suspect=include_suspect,
    )
    console.print(
        f"fitting model [bold]{spec.name}[/bold] (spec {spec.hash}) with {sampler}: "
        f"{chains} chains x ({tune} tune + {draws} draws), seed {seed}"
    )
    result = fit_database(db, spec, opts, extra=None if observed is None else observed.training_rows())
    info = result.info
    conv = info.convergence
    path = fitfile.save(result, out or f"fits/{spec.name}.nc")
    click.echo(f"rows fitted: {info.n_rows} | compile {info.compile_s:.1f} s, sampling {info.sample_s:.1f} s")
    if info.rounds > 1:
        click.echo(
            f"R-hat or ESS fell short with {chains} chains: drew {info.rounds - 1} more round(s) of {chains} "
            f"fresh chains ({info.rounds * chains} chains in all)"
        )
    click.echo(f"convergence: {conv.line()}")
    click.echo(f"saved {path} (data {info.data_hash}, spec {spec.hash})")
    cells = check_cells(result)
    click.echo("\n".join(cells.lines(worst=CELLS_SHOWN)))
    if not cells.ok:
        click.echo(
            f"warning: the in-sample check fails in {len(cells.failed)} cells: the fit does not reproduce "
            "rows it was fitted to there (qbayes report lists every cell)",
            err=True,
        )
    if not conv.ok:
        msg = "fit failed convergence checks: " + "; ".join(conv.failures)
        if allow_bad_fit and not ship:
            click.echo(f"warning: {msg} (kept because of --allow-bad-fit)", err=True)
            return
        not_shipped = "the shipped posterior was not written: " if ship else ""
        raise QBayesError(
            f"{not_shipped}{msg}. Try more --tune/--draws/--extensions, or --allow-bad-fit to keep it anyway; "
            f"the file {path} is kept for inspection"
        )
    if ship:
        fitfile.save(fitfile.thin(result, draws=SHIP_DRAWS, seed=seed), ship_to)
        click.echo(f"shipped posterior: {ship_to} ({ship_to.stat().st_size / 1e6:.1f} MB, {SHIP_DRAWS} draws)")


def _prior_check(db, spec, seed):
    import numpy as np

    from qbayes.model.fit import prior_predictive

    pp = prior_predictive(db, spec, seed=seed)
    sim, obs = pp["simulated"], pp["observed"]
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    click.echo(f"prior predictive check for '{spec.name}' ({sim.shape[0]} draws x {sim.shape[1]} rows)")
    click.echo("quantile   observed delta   prior-predictive delta")
    for q in qs:
        click.echo(f"  {q:>5.2f}   {np.quantile(obs, q):>14.3f}   {np.quantile(sim, q):>14.3f}")
    inside = np.mean((obs >= np.quantile(sim, 0.005, axis=0)) & (obs <= np.quantile(sim, 0.995, axis=0)))
    click.echo(f"observed rows inside the prior's 99% predictive interval: {inside:.1%}")
