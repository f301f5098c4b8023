"""P(delta > 1 nat) and its Brier score (qbayes/evaluation/exceed.py), no sampling."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from qbayes.evaluation import exceed
from qbayes.evaluation.crossval import QGRID, FoldResult, predictions_table, summarise
from qbayes.evaluation.summary import ValidationSettings, ValidationSummary


def test_probability_from_quantiles_follows_the_cdf():
    """Quantiles of a known distribution give back its P(delta > 1): N(1, 1) puts half above;
    N(0.5, 0.5) about 16%; a distribution entirely below 1 gives the tail's floor."""
    from scipy import stats

    q = np.column_stack(
        [stats.norm.ppf(QGRID, 1.0, 1.0), stats.norm.ppf(QGRID, 0.5, 0.5), stats.norm.ppf(QGRID, -5.0, 0.1)]
    )
    p = exceed.from_quantiles(q, QGRID)
    assert p[0] == pytest.approx(0.5, abs=1e-9)
    assert p[1] == pytest.approx(stats.norm.sf(1.0, 0.5, 0.5), abs=0.01)
    assert p[2] == pytest.approx(QGRID[0] / 2)
    assert np.isnan(exceed.from_quantiles(np.full((QGRID.size, 1), np.nan), QGRID)[0])


def test_brier_is_zero_when_certain_and_right_and_counts_each_miss():
    y = np.array([0.1, 3.0, 12.0, 0.5])
    assert exceed.brier(y, np.array([0.0, 1.0, 1.0, 0.0])) == 0.0
    assert exceed.brier(y, np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(0.25)
    assert exceed.brier(y, np.array([0.5, np.nan, 0.5, 0.5])) == pytest.approx(0.25)  # NaN rows left out


def _rows(method, bits, group, delta):
    return pl.DataFrame(
        {
            "method": method,
            "bits": bits,
            "group_size": group,
            "delta": delta,
        },
        schema_overrides={"group_size": pl.Int64},
    )


def test_frequency_classifier_counts_the_training_cell_and_falls_back():
    """The share above 1 nat in the query's (method, bits, grouping) cell; a cell with fewer
    than MIN_CELL rows falls back to (bits, grouping)."""
    train = pl.concat(
        [
            _rows(["RTN"] * 5, [2.0] * 5, [128] * 5, [12.0, 11.0, 0.9, 10.0, 0.8]),  # 3 of 5 collapse
            _rows(["GPTQ"] * 5, [2.0] * 5, [128] * 5, [0.9, 0.7, 0.8, 0.6, 1.5]),  # 1 of 5
            _rows(["AWQ"] * 2, [2.0] * 2, [128] * 2, [11.0, 11.0]),  # too few: (bits, grouping)
        ]
    )
    test = _rows(["RTN", "GPTQ", "AWQ"], [2.0] * 3, [128] * 3, [0.0] * 3)
    p = exceed.FrequencyClassifier().fit(train).probability(test)
    assert p == pytest.approx([0.6, 0.2, 6 / 12])


def test_forest_classifier_separates_bits():
    """Trained on rows that collapse at 2 bits and hold at 4, it says so for new rows."""
    rng = np.random.default_rng(0)
    n = 60
    bits = np.repeat([2.0, 4.0], n // 2)
    train = pl.DataFrame(
        {
            "params_b": rng.uniform(1, 70, n),
            "train_tokens_b": np.full(n, 1000.0),
            "bits": bits,
            "group_size": np.full(n, 128),
            "act_bits": np.full(n, 16.0),
            "method": ["RTN"] * n,
            "eval_set": ["wikitext2"] * n,
            "delta": np.where(bits < 3, 10.0, 0.05) + rng.normal(0, 0.01, n),
        }
    )
    p = exceed.ForestClassifier(seed=1).fit(train).probability(train.head(1).vstack(train.tail(1)))
    assert p[0] > 0.9 and p[1] < 0.1
    one_class = exceed.ForestClassifier().fit(train.filter(pl.col("bits") > 3))
    assert one_class.probability(train.head(3)).tolist() == [0.0, 0.0, 0.0]


def test_summary_scores_brier_per_model_and_keeps_it_in_json():
    """Models with P(delta > 1) get a Brier score overall and per family; a classifier's
    result (no quantiles) is in the Brier scores and the per-row table, not in the interval
    scores; the JSON document keeps the scores and reads back."""
    y = np.array([12.0, 0.5, 0.05, 0.02])
    rows = pl.DataFrame(
        {"family": ["A"] * 4, "model": ["a"] * 4, "w_bits": [2.0, 2.0, 4.0, 4.0], "group_size": [128] * 4, "delta": y}
    )
    q = np.stack([y + (p - 0.5) * 0.1 for p in QGRID])
    results = [
        FoldResult("A", "bayes", y, q, rows=rows, p_exceed=np.array([0.9, 0.1, 0.0, 0.0])),
        FoldResult("A", "exceed_frequency", y, None, rows=rows, p_exceed=np.array([0.5, 0.5, 0.0, 0.0])),
    ]
    s = summarise(results, ValidationSettings())
    assert s.models == ("bayes",)
    brier = {(b.model, b.family): b for b in s.brier}
    assert brier["bayes", "all"].brier == pytest.approx((0.01 + 0.01) / 4)
    assert brier["exceed_frequency", "all"].brier == pytest.approx(0.5 / 4)
    assert brier["bayes", "A"].n == 4 and brier["bayes", "all"].share == pytest.approx(0.25)
    back = ValidationSummary.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.brier == s.brier
    table = predictions_table(results)
    assert table.height == 8
    clf = table.filter(pl.col("predicted_by") == "exceed_frequency")
    assert clf["delta_q50"].null_count() == 4 and clf["p_exceed_1nat"].to_list() == [0.5, 0.5, 0.0, 0.0]
