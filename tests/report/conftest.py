"""A tiny real fit (three families, 2 chains x 100 draws, about 30 s) and its report,
made once per test session. One family is renamed ``<script>alert(1)</script>`` and one
method gets ``$``, ``&`` and ``<b>`` in its name, to prove that names from data are
escaped in the HTML and drawn literally in the figures."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from report_fixtures import EVIL_FAMILY, EVIL_METHOD, FAMILIES, ROOT, VALIDATION_JSON


def _tiny_table() -> pl.DataFrame:
    from qbayes.db.store import load
    from qbayes.model.table import training_table

    df = training_table(load(ROOT / "data")).filter(pl.col("family").is_in(FAMILIES))
    rarest = df.group_by("method").len().sort(["len", "method"]).get_column("method")[0]
    return df.with_columns(
        pl.when(pl.col("family") == "BLOOM").then(pl.lit(EVIL_FAMILY)).otherwise(pl.col("family")).alias("family"),
        pl.when(pl.col("method") == rarest).then(pl.lit(EVIL_METHOD)).otherwise(pl.col("method")).alias("method"),
    )


@pytest.fixture(scope="session")
def tiny_fit_path(tmp_path_factory) -> Path:
    from qbayes.model.fit import FitOptions, fit_table
    from qbayes.model.fitfile import save
    from qbayes.model.samplers import SampleConfig
    from qbayes.model.spec import load_spec

    opts = FitOptions(sample=SampleConfig(draws=100, tune=100, chains=2, progress=False, extensions=0))
    fit = fit_table(_tiny_table(), load_spec("hierarchical"), opts)
    return save(fit, tmp_path_factory.mktemp("fit") / "tiny.nc")


@pytest.fixture(scope="session")
def tiny_fit(tiny_fit_path):
    from qbayes.model.fitfile import load

    return load(tiny_fit_path)


@pytest.fixture(scope="session")
def report_path(tiny_fit_path, tmp_path_factory) -> Path:
    """The report of the tiny fit with the validation fixture, written by the real CLI."""
    from qbayes.cli import main

    out = tmp_path_factory.mktemp("report") / "nested" / "tiny.html"
    # a second file as the forward scheme writes it: its own scheme and scores over >= 3-bit rows
    doc = json.loads(VALIDATION_JSON.read_text())
    forward = out.parent.parent / "validation-forward.json"
    forward.write_text(
        json.dumps(
            {
                **doc,
                "settings": {**doc.get("settings", {}), "scheme": "forward"},
                "overall_3bits": [{**r, "n": 7, "mdae": 0.0123} for r in doc["overall"]],
            }
        )
    )
    try:
        main(
            [
                "report",
                "--fit",
                str(tiny_fit_path),
                "--validation",
                str(VALIDATION_JSON),
                "--validation",
                str(forward),
                "--out",
                str(out),
                "--draws",
                "200",
            ]
        )
    except SystemExit as exc:  # main() exits only on errors
        pytest.fail(f"qbayes report exited with {exc.code}")
    return out


@pytest.fixture(scope="session")
def report_html(report_path) -> str:
    return report_path.read_text(encoding="utf-8")
