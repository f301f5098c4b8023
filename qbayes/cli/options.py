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

    paths = list(paths) or [resources.database_dir()]
    return store.load(paths[0]) if len(paths) == 1 else store.load_many(paths)


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


def refuse_typos(fit, df, where: str, new_ok) -> None:
    """Refuse values of ``df`` that look like typos of levels ``fit`` knows, on rows not
    marked ``new_ok`` (a bool for all rows, or a boolean Series)."""
    from qbayes.model import known_families, unseen

    unseen.refuse_typos(df, fit.encoding, where, new_ok, families=known_families.load())
