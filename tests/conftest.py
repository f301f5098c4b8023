"""Shared test helpers: run the CLI in-process and capture what it prints."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import SHIPPED_DB
from qbayes.cli import main


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

