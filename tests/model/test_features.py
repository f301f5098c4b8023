"""Measured features as covariates: joined to the training table, standardised with the
training rows' scale, 0 (the average) where unmeasured, and selected by the spec."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.db.database import Database
from qbayes.errors import QBayesError
from qbayes.model.covariates import covariates
from qbayes.model.encoding import Encoding
from qbayes.model.features import COVARIATES
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table


def _db() -> Database:
    """Two collected models (with features) and one published model (without)."""
    models = pl.DataFrame(
        {
            "family": ["zoo-a", "zoo-a", "Pub"],
            "model": ["a1", "a2", "p1"],
            "params_b": [1e-3, 2e-3, 7.0],
            "train_tokens_b": [1e-3, 1e-3, 1000.0],
        }
    )
    rows = []
    for model, kind, source in (
        ("a1", "collector", "qbayes-collect"),
        ("a2", "collector", "qbayes-collect"),
        ("p1", "paper", "arXiv:0000.00000"),
    ):
        base = {
            "model": model,
            "w_kind": "fp",
            "w_bits": 16.0,
            "eval_set": "wikitext2",
            "source_kind": kind,
            "source": source,
            "seq_len": 2048,
            "act_bits": 16.0,
            "dtype_label": "fp16",
        }
        rows.append({**base, "method": "none", "ppl": 10.0})
        for bits, sqnr in ((3.0, 12.0), (4.0, 18.0)):
            rows.append(
                {
                    **base,
                    "method": "RTN",
                    "w_kind": "int",
                    "w_bits": bits,
                    "group_size": 128,
                    "dtype_label": f"int{int(bits)}-g128",
                    "ppl": 10.0 * (1 + 0.1 / bits),
                    "sqnr_db": sqnr if kind == "collector" else None,
                }
            )
    results = pl.DataFrame(rows)
    features = pl.DataFrame(
        {
            "model": ["a1", "a2", "a1"],
            "feature": ["hessian_trace", "hessian_trace", "radial_loss"],
            "scope": ["model", "model", "model"],
            "value": [100.0, 400.0, 0.5],
            "radius": [None, None, 0.1],
        }
    )
    return Database(models=models, results=results, features=features).conform()


def test_training_table_attaches_features_and_filters_rows():
    db = _db()
    every = training_table(db)
    assert every.height == 6
    a1 = every.filter(pl.col("model") == "a1")
    assert a1["hessian_trace"].to_list() == [100.0, 100.0] and a1["radial_loss"].to_list() == [0.5, 0.5]
    assert every.filter(pl.col("model") == "p1")["hessian_trace"].null_count() == 2
    assert set(training_table(db, rows="collected")["model"]) == {"a1", "a2"}
    assert set(training_table(db, rows="published")["model"]) == {"p1"}


def test_features_are_standardised_on_training_rows_and_zero_when_missing():
    table = training_table(_db())
    enc = Encoding.from_table(table, ("log_nsr", "log_hessian_trace"))
    nsr = -np.array([12.0, 18.0]) * np.log(10) / 10
    assert enc.features["log_nsr"][0] == pytest.approx(nsr.mean())
    assert enc.features["log_hessian_trace"][0] == pytest.approx(np.log([100.0, 400.0]).mean())
    d = covariates(enc.read(table))
    assert d.feats.shape == (6, 2)
    published = (table["model"] == "p1").to_numpy()
    assert np.all(d.feats[published] == 0.0)  # unmeasured: the training average
    assert d.feats_missing[published].all() and not d.feats_missing[~published].any()  # and flagged
    assert np.allclose(d.feats[~published].mean(axis=0), 0.0) and np.allclose(d.feats[~published].std(axis=0), 1.0)
    again = Encoding.from_dict(enc.to_dict())
    assert again == enc and np.array_equal(covariates(again.read(table)).feats, d.feats)


def test_design_matrix_gains_one_column_per_feature():
    from qbayes.model.mean import design_matrix, layout

    table = training_table(_db())
    spec = load_spec("zoo")
    enc = Encoding.from_table(table, spec.features)
    x = design_matrix(covariates(enc.read(table)), spec.effects, enc.levels)
    assert x.shape[1] == sum(w for _, w in layout(spec.effects, enc.levels, enc.feature_names))
    assert [n for n, _ in layout(spec.effects, enc.levels, enc.feature_names) if n.startswith("feat_")] == [
        f"feat_{f}" for f in spec.features
    ]


def test_spec_checks_features_rows_and_shift(tmp_path):
    base = 'name = "m"\n'
    for text, message in (
        (base + 'features = ["log_hessian_trce"]\n', "log_hessian_trace"),
        (base + 'rows = "zoo"\n', "collected"),
        (base + "log_shift = 0\n", "log_shift"),
    ):
        path = tmp_path / "m.toml"
        path.write_text(text)
        with pytest.raises(QBayesError, match=message):
            load_spec(str(path))
    assert set(load_spec("zoo").features) <= set(COVARIATES)
    assert load_spec("hierarchical").rows == "published" and load_spec("zoo").rows == "collected"
