"""Leave-one-family-out validation through the CLI, and the scoring functions."""

from __future__ import annotations

import json

import numpy as np

from qbayes.model.crossval import QGRID, coverage, crps


def test_scores_on_a_known_distribution():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(20000)
    from scipy import stats

    q = np.repeat(stats.norm.ppf(QGRID)[:, None], y.size, axis=1)  # the true predictive
    assert abs(coverage(y, q, 0.9) - 0.9) < 0.01 and abs(coverage(y, q, 0.5) - 0.5) < 0.01
    # a point forecast at the truth's median scores worse than the full predictive
    assert crps(y, q) < crps(y, np.zeros_like(q))


def test_validate_cli_holds_out_a_family_and_writes_strict_json(cli, tmp_path):
    out = tmp_path / "v.json"
    r = cli("validate", "--family", "Falcon", "--model", "pooled", "--draws", 60, "--tune", 60, "--chains", 2,
            "--json", out)
    assert r.code == 0, r.err
    text = out.read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert doc["models"] == ["cell_median", "scaling_law_ls", "random_forest", "pooled"]
    assert {r["family"] for r in doc["per_family"]} == {"Falcon"}
    for row in doc["overall"]:
        assert row["n"] == 4 and 0 <= row["cov90"] <= 1 and row["crps"] >= 0
    pooled = [r for r in doc["per_family"] if r["model"] == "pooled"][0]
    assert {"max_rhat", "divergences"} <= set(pooled)
    assert len([c for c in doc["calibration"] if c["model"] == "pooled"]) == 9


def test_validate_cli_unknown_family_suggests(cli, tmp_path):
    r = cli("validate", "--family", "Falkon", "--json", tmp_path / "v.json")
    assert r.code == 2 and "did you mean 'Falcon'" in r.err
    assert not (tmp_path / "v.json").exists()
