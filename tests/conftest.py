"""Fixtures shared by all tests: the CLI run in-process, a private copy of the shipped
database, and small real fits (two families, short chains) of the default model, of the
comparison model with block-design effects, and of a small model with a collapse regime."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from qbayes.cli import main
from qbayes.db import store
from qbayes.model import fitfile
from qbayes.model.fit import fit_table
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table

from helpers import SHIPPED_DB, SMALL


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Call ``qbayes ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    """A private copy of the shipped database, safe to modify."""
    dst = tmp_path / "db"
    shutil.copytree(SHIPPED_DB, dst, ignore=shutil.ignore_patterns("*.csv", "*.md", "published"))
    return dst


@pytest.fixture(scope="session")
def table() -> pl.DataFrame:
    return training_table(store.load(SHIPPED_DB), rows="published")


def _fit_two_families(tmp_path_factory, table, model: str, name: str):
    """``model`` fitted to OPT and LLaMA-1 rows (wikitext2 only), saved as ``name``."""
    sub = table.filter(pl.col("family").is_in(["OPT", "LLaMA-1"]) & (pl.col("eval_set") == "wikitext2"))
    return fitfile.save(fit_table(sub, load_spec(model), SMALL), tmp_path_factory.mktemp("fit") / name)


@pytest.fixture(scope="session")
def small_fit_path(tmp_path_factory, table):
    """The default model on two families, saved."""
    return _fit_two_families(tmp_path_factory, table, "hierarchical", "small.nc")


@pytest.fixture(scope="session")
def small_fit(small_fit_path):
    return fitfile.load(small_fit_path)


@pytest.fixture(scope="session")
def v2_fit(tmp_path_factory, table):
    """The previous default (hierarchical-v2: no family x method terms, no collapse regime) on
    the rows of small_fit: a model in which one method's rows teach about another's, for the
    tests of what conditioning on measured rows does."""
    return fitfile.load(_fit_two_families(tmp_path_factory, table, "hierarchical-v2", "v2.nc"))


@pytest.fixture(scope="session")
def arch_fit_path(tmp_path_factory, table):
    """The comparison model with block-design effects (hierarchical-v1) on the same rows as
    small_fit, for what only a model with designs does: designs of unseen families, ln D
    within designs, families nested in designs."""
    return _fit_two_families(tmp_path_factory, table, "hierarchical-v1", "arch.nc")


@pytest.fixture(scope="session")
def arch_fit(arch_fit_path):
    return fitfile.load(arch_fit_path)


# a small model with a collapse regime (spec [collapse], qbayes/model/collapse.py): few
# effects, so that it compiles and samples in a fraction of the default model's time; with a
# collapse level per family (kappa_by) and an activation-term shift per method (act_intercept)
COLLAPSE_SPEC = """
name = "collapse-small"
likelihood = "log_student_t"
rows = "published"
curvature = "low_bits"
noise = ["low_bits", "per_channel"]
[priors]
gamma_d = { mu = 0.0, sigma = 0.25 }
[collapse]
by = { method = 1.0 }
kappa_by = { family = 0.15 }
[effects.method]
intercept = true
bits_slope = true
per_channel = true
act_intercept = true
fixed_sd = { intercept = 1.0, bits_slope = 0.3, per_channel = 0.7, act_intercept = 1.0 }
[effects.family]
intercept = true
bits_slope = true
fixed_sd = { intercept = 0.7, bits_slope = 0.15 }
"""


@pytest.fixture(scope="session")
def collapse_fit_path(tmp_path_factory, table):
    """The small collapse model on the rows of small_fit (OPT and LLaMA-1, wikitext2), saved."""
    spec = tmp_path_factory.mktemp("spec") / "collapse-small.toml"
    spec.write_text(COLLAPSE_SPEC)
    return _fit_two_families(tmp_path_factory, table, str(spec), "collapse.nc")


@pytest.fixture(scope="session")
def collapse_fit(collapse_fit_path):
    return fitfile.load(collapse_fit_path)


# a small model with a noise-scale shift per method (effect part noise_scale, mean.noise_shift)
# and no collapse regime: it compiles and samples in seconds
NOISE_SPEC = """
name = "noise-small"
likelihood = "log_student_t"
rows = "published"
curvature = "low_bits"
noise = ["low_bits", "per_channel"]
[effects.method]
intercept = true
bits_slope = true
per_channel = true
noise_scale = true
fixed_sd = { intercept = 1.0, bits_slope = 0.3, per_channel = 0.7, noise_scale = 0.5 }
[effects.family]
intercept = true
fixed_sd = { intercept = 0.7 }
"""


@pytest.fixture(scope="session")
def noise_fit(tmp_path_factory, table):
    """The small noise-scale model on the rows of small_fit (OPT and LLaMA-1, wikitext2)."""
    spec = tmp_path_factory.mktemp("spec") / "noise-small.toml"
    spec.write_text(NOISE_SPEC)
    return fitfile.load(_fit_two_families(tmp_path_factory, table, str(spec), "noise.nc"))


@pytest.fixture(scope="session")
def format_fit_path(tmp_path_factory, table):
    """The candidate with named-format effects (hierarchical-v3f) on the same rows as
    small_fit: LLaMA-1's rows include its llama.cpp sweeps (Q2_K ... Q8_0, two models)."""
    return _fit_two_families(tmp_path_factory, table, "hierarchical-v3f", "format.nc")


@pytest.fixture(scope="session")
def format_fit(format_fit_path):
    return fitfile.load(format_fit_path)
