"""Options shared by commands: the database (fit, validate) and the fit that answers
(predict, choose, report, suggest)."""

from __future__ import annotations

import functools

import click

from qbayes import resources
from qbayes.errors import QBayesError


def database_options(f):
    @click.option(
        "--data",
        "data",
        multiple=True,
        type=click.Path(),
        help="database directory (repeatable; default: the shipped data/)",
    )
    @click.option("--exclude-family", "exclude_family", multiple=True, help="leave this family out (repeatable)")
    @click.option("--include-suspect", is_flag=True, help="keep rows marked doubt='suspect' (left out by default)")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def load_databases(paths):
    from qbayes.db import store

    return store.load_paths(paths)


def fit_option(f):
    """``--fit PATH``, optional: without it the shipped default posterior answers."""
    return click.option(
        "--fit",
        "fit_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="fit file from `qbayes fit` [default: the shipped posterior of the default model]",
    )(f)


def load_fit(path):
    """The fit at ``path``, or the shipped one when ``path`` is None; says on stderr which
    fit answers."""
    from qbayes.model import fitfile

    if path is None:
        path = resources.shipped_fit()
        if path is None:
            raise QBayesError(
                "no --fit given and this qbayes ships no posterior (data/default-fit.nc); "
                "make one with `qbayes fit` and pass it with --fit"
            )
    fit = fitfile.load(path)
    click.echo(f"{fitfile.describe(fit)} [{path}]", err=True)
    return fit


def new_level_option(f):
    """``--new-level``: the query's unseen family, method or evaluation set is new on
    purpose, not a typo of one the fit knows (qbayes.model.unseen)."""
    return click.option(
        "--new-level",
        "new_level",
        is_flag=True,
        help="a family, method or evaluation set the fit has not seen is new on purpose: predict it from "
        "the population even when it is one edit from a known one (files: a 'new_ok' column)",
    )(f)


def observed_option(f):
    """``--observed FILE``: rows the user measured, to condition the predictions on."""
    return click.option(
        "--observed",
        "observed_path",
        type=click.Path(),
        default=None,
        help="rows you measured: a .csv/.parquet in the query layout plus 'ppl' (fp16 perplexity from "
        "'fp16_ppl' or an fp16 row of the same model and eval set), or a database directory written by "
        "`qbayes collect`; predictions condition on them (docs/observed.md)",
    )(f)


def load_observed(path):
    """The observed rows at ``path`` (conditioning.Observed), or None when ``path`` is None."""
    if path is None:
        return None
    from pathlib import Path

    import polars as pl

    from qbayes.model import conditioning

    p = Path(path)
    if p.is_dir():
        from qbayes.db import store
        from qbayes.model.table import training_table

        return conditioning.observed_training(training_table(store.load(p)), str(p))
    if not p.is_file():
        raise QBayesError(f"{p}: no such observed-rows file or database directory")
    if p.suffix not in (".csv", ".parquet"):
        raise QBayesError(f"{p}: observed rows must be a .csv or .parquet file, or a database directory")
    try:
        df = pl.read_csv(p, infer_schema=False, null_values=[""]) if p.suffix == ".csv" else pl.read_parquet(p)
    except Exception as exc:
        raise QBayesError(f"{p}: cannot read observed rows ({type(exc).__name__}: {exc})") from exc
    return conditioning.observed_rows(df, str(p))
