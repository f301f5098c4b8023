"""Where the files qbayes ships are: the model specs, the database, and the tables that
go with it.

The canonical copies live at the top of the repository (``models/*.toml``, ``data/``).
Building a wheel copies them into the package as ``qbayes/_resources/models`` and
``qbayes/_resources/data`` (``setup.py``), so an installed qbayes finds them through
:mod:`importlib.resources` wherever it runs from. A checkout (an editable install, the test
suite) has no ``_resources`` and reads the top-level files themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import polars as pl

from qbayes.errors import QBayesError

PACKAGED = "_resources"  # the folder of the package that a built wheel carries them in
CHECKOUT = Path(__file__).resolve().parent.parent  # the repository root, when run from one
SHIPPED_FIT = "default-fit.nc"  # the default model's posterior, in the database folder
SHIPPED_ACCURACY_FIT = "accuracy-fit.nc"  # task accuracy given the degradation, built on SHIPPED_FIT


def _find(name: str) -> Path | None:
    """The installed ``qbayes/_resources/<name>`` if there is one, else the checkout's
    ``<name>``; None where neither exists."""
    packaged = resources.files("qbayes") / PACKAGED / name
    if packaged.is_dir():
        if not isinstance(packaged, Path):
            raise QBayesError(
                f"qbayes's shipped files ({packaged}) must be on the file system; install qbayes unzipped"
            )
        return packaged
    folder = CHECKOUT / name
    return folder if folder.is_dir() else None


def _folder(name: str) -> Path:
    folder = _find(name)
    if folder is None:
        raise QBayesError(
            f"qbayes's shipped '{name}' folder is missing: neither the package's "
            f"{PACKAGED}/{name} nor {CHECKOUT / name} exists; reinstall qbayes"
        )
    return folder


def spec_dir() -> Path:
    """The folder of the model specs (``models/NAME.toml``)."""
    return _folder("models")


def database_dir() -> Path:
    """The shipped database (``data/``): the default of every ``--data``."""
    return _folder("data")


def known_families_csv() -> Path:
    """Block designs and training tokens of well-known families (known_families)."""
    return database_dir() / "known_families.csv"


def formats_csv() -> Path:
    """The table of format names people type (named_formats)."""
    return database_dir() / "formats.csv"


def tasks_csv() -> Path:
    """Chance level and number of questions of the tasks accuracy is predicted for (tasks)."""
    return database_dir() / "tasks.csv"


def model_shapes_csv() -> Path:
    """Layers, KV heads and head size of well-known models, for KV-cache memory (shapes)."""
    return database_dir() / "model_shapes.csv"


def collectors_dir() -> Path | None:
    """The folder of the shipped collection grids (``collectors/NAME.toml``), if any."""
    return _find("collectors")


def read_table(path: Path, columns: Sequence[str], *, what: str) -> pl.DataFrame:
    """One of the shipped CSV tables, every cell a string; raises QBayesError when the
    file or any of ``columns`` is missing (``what`` names the table in the message)."""
    if not path.is_file():
        raise QBayesError(f"{path}: {what} is missing (it ships with qbayes)")
    df = pl.read_csv(path, infer_schema=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise QBayesError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(columns)}")
    return df


def shipped_fit() -> Path | None:
    """The shipped posterior of the default model (``data/default-fit.nc``), or None where
    this qbayes has none."""
    path = database_dir() / SHIPPED_FIT
    return path if path.is_file() else None


def shipped_accuracy_fit() -> Path | None:
    """The shipped posterior of task accuracy given the degradation
    (``data/accuracy-fit.nc``), or None where this qbayes has none."""
    path = database_dir() / SHIPPED_ACCURACY_FIT
    return path if path.is_file() else None
