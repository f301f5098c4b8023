"""Options shared by commands that read the database (fit, validate)."""

from __future__ import annotations

import functools

import click

from qbayes.resources import database_dir


def database_options(f):
    @click.option("--data", "data", multiple=True, type=click.Path(),
                  help="database directory (repeatable; default: the shipped data/)")
    @click.option("--exclude-family", "exclude_family", multiple=True, help="leave this family out (repeatable)")
    @click.option("--include-suspect", is_flag=True, help="keep rows marked doubt='suspect' (left out by default)")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def load_databases(paths):
    from qbayes.db import store

    paths = list(paths) or [database_dir()]
    return store.load(paths[0]) if len(paths) == 1 else store.load_many(paths)
