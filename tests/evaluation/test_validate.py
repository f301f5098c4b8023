"""Leave-one-family-out validation through the CLI, and the scoring functions."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import polars as pl
import pytest

from qbayes.db import store
from qbayes.db.database import Database
from qbayes.errors import QBayesError
from qbayes.evaluation.crossval import (
    QGRID,
    Fold,
    FoldResult,
    coverage,
    crps,
    family_release,
    make_folds,
    mdae_gaps,
    predictions_table,
    scores,
)

from helpers import SHIPPED_DB


def test_scores_on_a_known_distribution():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(20000)
    from scipy import stats

    q = np.repeat(stats.norm.ppf(QGRID)[:, None], y.size, axis=1)  # the true predictive
    assert abs(coverage(y, q, 0.9) - 0.9) < 0.01 and abs(coverage(y, q, 0.5) - 0.5) < 0.01
    # a point forecast at the truth's median scores worse than the full predictive
    assert crps(y, q) < crps(y, np.zeros_like(q))


def test_scores_of_rows_no_model_predicts_are_undefined_and_quiet():
    """A baseline with no cell for a task's rows (cell_median on C-Eval) leaves NaN medians:
    its scores there are undefined, with no NumPy warning on the user's console."""
    y = np.array([1.0, 2.0])
    q = np.full((QGRID.size, 2), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores(y, q)
    assert s.n == 0 and all(np.isnan([s.mdae, s.mae, s.cov50, s.cov90, s.crps]))
    half = q.copy()
    half[:, 0] = 1.0  # one row predicted exactly
    assert scores(y, half).n == 1 and scores(y, half).mdae == 0.0


def test_validate_cli_holds_out_a_family_and_writes_strict_json(cli, tmp_path):
    out = tmp_path / "v.json"
    preds_path = tmp_path / "rows.parquet"
    r = cli(
        "validate",
        "--family",
        "Falcon",
        "--model",
        "pooled",
        "--draws",
        60,
        "--tune",
        60,
        "--chains",
        2,
        "--json",
        out,
        "--predictions",
        preds_path,
    )
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
    gaps = {g["model"]: g for g in doc["gaps"]}
    assert set(gaps) == {"cell_median", "scaling_law_ls", "random_forest"}
    for g in gaps.values():
        assert g["reference"] == "pooled" and g["n"] == 4 and g["lo"] <= g["hi"]
    assert "MdAE of pooled minus each model's" in r.out
    # Falcon's 4 rows are all 3-bit with groups: one kind of row, scored as the family is
    for row in doc["per_cell"]:
        assert row["cell"] == "3 bits, groups" and row["n"] == 4
        fam = [r for r in doc["per_family"] if r["model"] == row["model"]][0]
        assert np.isclose(row["mdae"], fam["mdae"]) and np.isclose(row["cov90"], fam["cov90"])
    assert len(doc["per_cell"]) == 4
    # the per-row file holds the same predictions the summary was scored from
    # the Brier score of P(delta > 1 nat): every model, and the two classifiers made for it
    brier = {b["model"]: b for b in doc["brier"] if b["family"] == "all"}
    assert set(brier) == {*doc["models"], "exceed_forest", "exceed_frequency"}
    for b in brier.values():
        assert b["n"] == 4 and 0 <= b["brier"] <= 1
    assert "Brier score of P(delta > 1 nat)" in r.out
    preds = pl.read_parquet(preds_path)
    assert preds.height == 6 * 4 and set(preds["held_out"]) == {"Falcon"} and set(preds["family"]) == {"Falcon"}
    assert preds["p_exceed_1nat"].null_count() == 0
    for row in doc["per_family"]:
        mine = preds.filter(pl.col("predicted_by") == row["model"])
        assert mine.height == 4
        assert np.isclose(mine["abs_error"].median(), row["mdae"])
        assert np.isclose(mine["covered90"].mean(), row["cov90"])


def test_validate_cli_unknown_family_suggests(cli, tmp_path):
    r = cli("validate", "--family", "Falkon", "--json", tmp_path / "v.json")
    assert r.code == 2 and "did you mean 'Falcon'" in r.err
    assert not (tmp_path / "v.json").exists()


RELEASED = {
    "OPT": dt.date(2022, 5, 3),
    "BLOOM": dt.date(2022, 7, 12),
    "LLaMA-1": dt.date(2023, 2, 24),
    "Qwen3": dt.date(2025, 4, 29),
}


def test_forward_folds_predict_each_family_from_the_families_released_before_it():
    folds = make_folds(list(RELEASED) * 3, scheme="forward", released=RELEASED)
    assert folds == [
        Fold("BLOOM", ("OPT",)),
        Fold("LLaMA-1", ("BLOOM", "OPT")),
        Fold("Qwen3", ("BLOOM", "LLaMA-1", "OPT")),
    ]  # OPT, the first, is no fold
    assert make_folds(list(RELEASED), scheme="forward", released=RELEASED, only=["LLaMA-1"]) == [folds[1]]
    lofo = make_folds(list(RELEASED), scheme="lofo", released=None)
    assert [f.family for f in lofo] == sorted(RELEASED)
    assert all(set(f.train) == set(RELEASED) - {f.family} for f in lofo)
    # the shipped database dates every published family, and Qwen3 comes last
    shipped = family_release(store.load(SHIPPED_DB).models)
    assert max((d, f) for f, d in shipped.items() if d is not None)[1] == "Qwen3"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"only": ["OPT"]}, "no family in the data was released before OPT"),
        ({"released": {**RELEASED, "BLOOM": None}}, "BLOOM has none"),
        ({"only": ["Qwen 3"]}, "did you mean 'Qwen3'"),
        ({"scheme": "forwards"}, "did you mean 'forward'"),
    ],
)
def test_forward_folds_are_refused_by_name_before_any_fitting(kwargs, message):
    args = {"scheme": "forward", "released": RELEASED, **kwargs}
    with pytest.raises(QBayesError, match=message):
        make_folds(list(RELEASED), **args)


def test_validate_cli_forward_refuses_a_family_without_a_release_date(cli, tmp_path, shipped_copy):
    models = pl.read_parquet(shipped_copy / "models.parquet")
    models = models.with_columns(
        pl.when(pl.col("family") == "Falcon").then(None).otherwise(pl.col("released")).alias("released")
    )
    db = store.load(shipped_copy)
    store.save(Database(models=models, results=db.results, features=db.features, failures=db.failures), shipped_copy)
    out = tmp_path / "v.json"
    r = cli("validate", "--data", shipped_copy, "--scheme", "forward", "--model", "pooled", "--json", out)
    assert r.code == 2 and "Falcon has none" in r.err
    assert not out.exists()


def test_validate_cli_forward_scores_a_family_from_earlier_ones(cli, tmp_path):
    out = tmp_path / "v.json"
    r = cli(
        "validate",
        "--scheme",
        "forward",
        "--family",
        "Falcon",
        "--model",
        "pooled",
        "--baseline",
        "cell_median",
        "--draws",
        60,
        "--tune",
        60,
        "--chains",
        2,
        "--json",
        out,
    )
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    assert doc["settings"]["scheme"] == "forward"
    assert doc["settings"]["folds"] == {"Falcon": ["BLOOM", "LLaMA-1", "Llama-2", "OPT"]}  # not Qwen3 (2025)
    assert {r["model"] for r in doc["overall_3bits"]} == {"cell_median", "pooled"}
    assert "Forward (from earlier families) validation" in r.out


def _fold(family: str, model: str, y: np.ndarray, median: np.ndarray) -> FoldResult:
    return FoldResult(family, model, y, np.repeat(median[None, :], QGRID.size, axis=0))


def test_mdae_gaps_are_paired_and_signed():
    rng = np.random.default_rng(1)
    results, errs = [], {"good": [], "bad": []}
    for fam, n in (("A", 300), ("B", 61)):
        y = rng.standard_normal(n)
        good = y + 0.1 * rng.standard_normal(n)
        bad = y + 0.5 * rng.standard_normal(n)
        shifted = y + np.sign(good - y) * (np.abs(good - y) + 0.01)  # every |error| 0.01 larger than good's
        with_nan = bad.copy()
        with_nan[:5] = np.nan
        results += [
            _fold(fam, "good", y, good),
            _fold(fam, "bad", y, bad),
            _fold(fam, "shifted", y, shifted),
            _fold(fam, "nan", y, with_nan),
        ]
        errs["good"].append(np.abs(good - y))
        errs["bad"].append(np.abs(bad - y))
    gaps = {g.model: g for g in mdae_gaps(results, reference="good", n_boot=400)}
    good_e, bad_e = np.concatenate(errs["good"]), np.concatenate(errs["bad"])
    assert np.isclose(gaps["bad"].gap, np.median(good_e) - np.median(bad_e))
    assert gaps["bad"].hi < 0 and gaps["bad"].p_reference_better == 1.0
    # paired: the same rows in every replicate, so a constant extra error is a constant gap
    assert np.isclose(gaps["shifted"].lo, -0.01) and np.isclose(gaps["shifted"].hi, -0.01)
    # a row without a prediction is dropped for both models
    assert gaps["nan"].n == good_e.size - 10
    keep = np.ones(good_e.size, dtype=bool)
    keep[[0, 1, 2, 3, 4, 300, 301, 302, 303, 304]] = False
    assert np.isclose(gaps["nan"].gap, np.median(good_e[keep]) - np.median(bad_e[keep]))
    # the reference's side flips the sign
    back = {g.model: g for g in mdae_gaps(results, reference="bad", n_boot=400)}
    assert np.isclose(back["good"].gap, -gaps["bad"].gap) and back["good"].lo > 0


def test_predictions_table_lays_rows_beside_each_models_quantiles():
    rows = pl.DataFrame(
        {
            "family": ["A", "A", "A"],
            "model": ["a-1", "a-2", "a-3"],
            "method": ["RTN", "GPTQ", "AWQ"],
            "w_bits": [3.0, 4.0, 2.0],
            "delta": [0.1, 0.02, 5.0],
        }
    )
    y = rows["delta"].to_numpy()
    q = np.stack([y + (p - 0.5) for p in QGRID])  # median exact, 90% interval +-0.45
    q[:, 2] += 1.0  # the third row's interval misses it, its median is 1.0 off
    out = predictions_table([FoldResult("A", "m1", y, q, rows=rows), FoldResult("A", "m2", y, q - 0.2, rows=rows)])
    assert out.height == 6 and out["predicted_by"].to_list() == ["m1"] * 3 + ["m2"] * 3
    assert out["model"].to_list()[:3] == ["a-1", "a-2", "a-3"] and set(out["held_out"]) == {"A"}
    m1 = out.filter(pl.col("predicted_by") == "m1")
    assert np.allclose(m1["abs_error"].to_numpy(), [0.0, 0.0, 1.0])
    assert m1["covered90"].to_list() == [True, True, False]
    assert np.allclose(m1["delta_q05"].to_numpy(), q[0])
    assert np.allclose(out.filter(pl.col("predicted_by") == "m2")["abs_error"].to_numpy()[:2], 0.2)


def test_predictions_table_needs_the_rows():
    with pytest.raises(ValueError, match="no rows"):
        predictions_table([FoldResult("A", "m", np.zeros(2), np.zeros((QGRID.size, 2)))])


def test_validate_cli_refuses_a_predictions_file_of_unknown_kind(cli, tmp_path):
    r = cli("validate", "--family", "Falcon", "--predictions", tmp_path / "rows.xlsx")
    assert r.code == 2 and ".csv or .parquet" in r.err
    assert not list(tmp_path.iterdir())


def test_summary_scores_each_kind_of_row():
    from qbayes.evaluation.crossval import row_cells, summarise
    from qbayes.evaluation.summary import ValidationSettings, ValidationSummary

    rows = pl.DataFrame(
        {
            "family": ["A"] * 6,
            "w_bits": [2.0, 3.0, 3.0, 4.0, 4.0, 8.0],
            "group_size": [128, 128, None, 64, None, None],
            "delta": [3.0, 0.2, 0.5, 0.05, 0.1, 0.01],
        }
    )
    assert list(row_cells(rows)) == [
        "≤2 bits, groups",
        "3 bits, groups",
        "3 bits, per channel",
        "4 bits, groups",
        "4 bits, per channel",
        "≥5 bits, per channel",
    ]
    y = rows["delta"].to_numpy()
    err = np.array([1.0, 0.1, 0.2, 0.01, 0.02, 0.0])
    q = np.repeat((y + err)[None, :], QGRID.size, axis=0)
    more = pl.DataFrame({"family": ["B"] * 2, "w_bits": [3.0, 3.0], "group_size": [128, 128], "delta": [0.3, 0.4]})
    q_b = np.repeat(np.array([0.3, 0.7])[None, :], QGRID.size, axis=0)
    doc = summarise(
        [FoldResult("A", "m", y, q, rows=rows), FoldResult("B", "m", more["delta"].to_numpy(), q_b, rows=more)],
        ValidationSettings(),
    )
    by = {r.cell: r.scores for r in doc.per_cell}
    # every kind present, in a fixed order; families pooled within a kind
    assert [r.cell for r in doc.per_cell] == list(row_cells(rows))
    assert by["3 bits, groups"].n == 3 and np.isclose(by["3 bits, groups"].mdae, 0.1)  # errors 0.1, 0, 0.3
    assert np.isclose(by["≤2 bits, groups"].mdae, 1.0) and by["≥5 bits, per channel"].n == 1
    # folds without their rows (made by hand) give no per-kind scores
    assert summarise([FoldResult("A", "m", y, q)], ValidationSettings()).per_cell == ()
    # the record comes back equal from its JSON document
    assert ValidationSummary.from_dict(json.loads(json.dumps(doc.to_dict(), allow_nan=False))) == doc
