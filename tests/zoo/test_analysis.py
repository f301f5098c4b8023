"""`qbayes zoo analyze`: the D/N and feature studies on a synthetic zoo whose degradation
follows a known law (delta ∝ D^0.5 / N^0.7, times exp of an informative per-model
feature), plus one pure-noise feature; strict JSON, the HTML page, and the errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import polars as pl
import pytest

from qbayes.db import store
from qbayes.db.database import Database
from qbayes.errors import QBayesError
from qbayes.model.table import training_table
from qbayes.zoo import analysis_result
from qbayes.zoo.analysis import analyze, noise_floor
from qbayes.zoo.analysis_result import Settings, ZooAnalysis
from qbayes.zoo.analysis_table import zoo_table

GAMMA_D, GAMMA_N = 0.5, 0.7
FAST = Settings(seed=3, ci=0.95, bootstrap=60, forest_trees=25, permutation_repeats=2)
# method, w_kind, bits, group, label, calib, ln delta at the reference N and D
CONFIGS = [
    ("RTN", "int", 2.0, 32, "int2-g32", None, math.log(0.3)),
    ("RTN", "int", 3.0, 32, "int3-g32", None, math.log(0.03)),
    ("RTN", "int", 4.0, 32, "int4-g32", None, math.log(0.006)),
    ("RTN", "int", 4.0, None, "int4", None, math.log(0.01)),
    ("RTN", "int", 8.0, None, "int8", None, math.log(1e-5)),
    ("GPTQ", "int", 3.0, 32, "int3-g32", "shakespeare", math.log(0.015)),
]


def synthetic_zoo(
    *,
    seed: int = 0,
    families=("llama", "gpt2", "opt"),
    sizes=(1, 2, 3),
    budgets=(0.25, 0.5, 1.0, 2.0, 4.0),
    with_noise_feature: bool = True,
) -> Database:
    rng = np.random.default_rng(seed)
    models, results, feats = [], [], []
    common = {"act_bits": 32.0, "source_kind": "collector", "source": "qbayes-collect", "seq_len": 128}
    for fi, arch in enumerate(families):
        for s in sizes:
            n = 1e5 * 3.0 ** (s - 1) * (1 + 0.1 * fi)
            for d_m in budgets:
                name = f"zoo-{arch}-s{s}-t{d_m:g}M"
                z = rng.normal(0, 0.35)  # the informative per-model effect
                models.append(
                    {
                        "family": f"zoo-{arch}",
                        "model": name,
                        "params_b": 2 * n / 1e9,
                        "non_embedding_params_b": n / 1e9,
                        "train_tokens_b": d_m * 1e6 / 1e9,
                        "architecture": arch,
                    }
                )
                feats.append(
                    {
                        "model": name,
                        "feature": "hessian_trace",
                        "scope": "model",
                        "eval_set": "shakespeare",
                        "value": float(math.exp(5 + z)),
                    }
                )
                if with_noise_feature:
                    for calib in ("shakespeare", "bible"):
                        feats.append(
                            {
                                "model": name,
                                "feature": "act_kurtosis",
                                "scope": "model",
                                "calib_set": calib,
                                "value": float(math.exp(rng.normal(2, 0.3))),
                            }
                        )
                law = GAMMA_D * math.log(d_m / 1.0) - GAMMA_N * math.log(n / 3e5) + z + 0.2 * (fi - 1)
                for ei, ev in enumerate(("shakespeare", "bible")):
                    nll0 = 4.0 + 0.3 * ei - 0.1 * s
                    results.append(
                        {
                            **common,
                            "model": name,
                            "method": "none",
                            "w_kind": "float",
                            "w_bits": 32.0,
                            "w_bits_eff": 32.0,
                            "dtype_label": "fp32",
                            "eval_set": ev,
                            "ppl": math.exp(nll0),
                            "nll": nll0,
                        }
                    )
                    for method, kind, bits, group, label, calib, c in CONFIGS:
                        delta = math.exp(c + law + 0.1 * ei + rng.normal(0, 0.1)) + rng.normal(0, 3e-5)
                        eff = bits + (16 + bits) / group if group else bits
                        results.append(
                            {
                                **common,
                                "model": name,
                                "method": method,
                                "w_kind": kind,
                                "w_bits": bits,
                                "group_size": group,
                                "w_bits_eff": eff,
                                "dtype_label": label,
                                "calib_set": calib,
                                "eval_set": ev,
                                "ppl": math.exp(nll0 + delta),
                                "nll": nll0 + delta,
                                "sqnr_db": 6.02 * bits - 1.5 + rng.normal(0, 0.3),
                            }
                        )
    return Database(models=pl.DataFrame(models), results=pl.DataFrame(results), features=pl.DataFrame(feats)).conform()


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "db"
    store.save(synthetic_zoo(), path)
    return path


@pytest.fixture(scope="module")
def study(zoo_dir):
    return analyze(store.load(zoo_dir), settings=FAST)


def test_table_matches_training_table(zoo_dir):
    db = store.load(zoo_dir)
    table = zoo_table(db)
    assert table.height == 45 * len(CONFIGS) * 2
    ref = training_table(db)
    assert np.allclose(np.sort(table["delta"].to_numpy()), np.sort(ref["delta"].to_numpy()))
    row = table.filter(pl.col("model") == "zoo-opt-s2-t1M").row(0, named=True)
    assert row["size"] == "s2" and row["family"] == "zoo-opt"
    assert row["log_dn"] == pytest.approx(math.log(1e6) - math.log(3e5 * 1.2))
    assert row["act_kurtosis"] > 0 and row["theory"] > 0  # averaged over calib sets; 1/2 tr(H) 10^(-SQNR/10)


def test_noise_floor_from_negative_deltas():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1e-3, 4000)
    assert noise_floor(noise) == pytest.approx(1e-3, rel=0.1)
    assert noise_floor(np.array([0.1, 0.2])) == pytest.approx(0.0015)


def test_recovers_gamma_d(study):
    result, _ = study
    pooled = result.dn.pooled["clear"]
    assert pooled.gamma_d_lo > 0
    assert pooled.gamma_d_lo <= GAMMA_D <= pooled.gamma_d_hi
    assert pooled.gamma_n_lo <= GAMMA_N <= pooled.gamma_n_hi
    int8 = next(r for r in result.dn.per_format if r.fmt == "RTN/int8")
    assert int8.frac_clear < 0.5  # int8 degradation sits at the noise floor
    assert all(b.clear.gamma_d_lo > 0 for b in result.dn.per_bits if b.w_bits < 8)
    for scheme in ("architecture", "size"):
        overall = result.dn.heldout[scheme].overall.scores
        assert overall["with_ln_d"].mdae_ln < 0.9 * overall["without_ln_d"].mdae_ln
        assert overall["with_ln_d"].mdae_delta < 0.9 * overall["without_ln_d"].mdae_delta
        assert len(result.dn.heldout[scheme].folds) == 3


def test_informative_feature_helps_noise_feature_does_not(study):
    result, _ = study
    for scheme in ("architecture", "size"):
        rows = {r.set: r for r in result.features.improvement[scheme]["ridge"]}
        assert rows["hessian"].rel_ln > 0.05 and rows["hessian"].rel_delta > 0.05
        assert rows["act_outliers"].rel_ln < 0.05  # chance alone moves MdAE by a few percent
        assert rows["hessian"].rel_ln > rows["act_outliers"].rel_ln + 0.05
        assert rows["theory"].rel_ln > 0.05  # 1/2 tr(H) 10^(-SQNR/10) carries the Hessian's information
        ranking = [r.block for r in result.features.permutation[scheme]["ridge"]]
        assert ranking.index("hessian_trace") < ranking.index("act_kurtosis")
    # a forest cannot extrapolate in ln N (leave-one-size-out), so it is judged across architectures
    forest = {r.set: r for r in result.features.improvement["architecture"]["forest"]}
    assert forest["hessian"].rel_ln > forest["act_outliers"].rel_ln
    assert "radial" not in {s.name for s in result.features.sets}
    assert any("radial" in n for n in result.notes)


def test_json_is_strict_and_html_written(study, tmp_path, cli):
    result, _ = study
    text = result.to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    small = tmp_path / "db"
    store.save(synthetic_zoo(families=("llama", "opt"), sizes=(1, 2), budgets=(0.25, 1.0, 4.0)), small)
    out, js = tmp_path / "zoo.html", tmp_path / "zoo.json"
    res = cli(
        "zoo",
        "analyze",
        "--data",
        small,
        "--out",
        out,
        "--json",
        js,
        "--seed",
        "1",
        "--bootstrap",
        "10",
        "--trees",
        "5",
    )
    assert res.code == 0, res.err + res.out
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 2 and "Could not draw" not in page
    doc = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert doc["data"]["models"] == 12 and doc["settings"]["seed"] == 1
    assert "gamma_D =" in res.out


def _json_keys(record) -> set[str]:
    """The keys a record is written with: its fields' names, a FLAT field's own keys instead of its name."""
    keys = set()
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if not f.metadata.get("flat"):
            keys.add(f.name)
        else:
            keys |= _json_keys(value) if dataclasses.is_dataclass(value) else set(value)
    return keys


def _walk(value, doc, seen: set[type]) -> None:
    """Check a record tree against its JSON document, key for key; collect the record types seen."""
    if dataclasses.is_dataclass(value):
        seen.add(type(value))
        assert set(doc) == _json_keys(value), type(value).__name__
        for f in dataclasses.fields(value):
            part = getattr(value, f.name)
            if not f.metadata.get("flat"):
                _walk(part, doc[f.name], seen)
            elif dataclasses.is_dataclass(part):
                _walk(part, {k: doc[k] for k in _json_keys(part)}, seen)
            else:
                _walk(part, {k: doc[k] for k in part}, seen)
    elif isinstance(value, dict):
        assert set(doc) == set(value)
        for k, v in value.items():
            _walk(v, doc[k], seen)
    elif isinstance(value, (list, tuple)):
        assert len(doc) == len(value)
        for v, d in zip(value, doc):
            _walk(v, d, seen)


def test_result_round_trips_through_json(study):
    result, _ = study
    partial, _ = analyze(
        synthetic_zoo(families=("llama",), sizes=(1, 2), budgets=(0.25, 1.0)),
        settings=Settings(bootstrap=10, forest_trees=5, permutation_repeats=1),
    )
    seen: set[type] = set()
    for res in (result, partial):
        text = res.to_json()
        back = ZooAnalysis.from_json(text)
        assert back == res  # every field, nested records included
        assert back.to_json() == text
        doc = json.loads(text)
        assert set(doc) == {f.name for f in dataclasses.fields(ZooAnalysis)}
        _walk(res, doc, seen)
    records = {c for c in vars(analysis_result).values() if isinstance(c, type) and dataclasses.is_dataclass(c)}
    assert seen == records  # each record type was written and read back


def test_partial_zoo_runs_with_notes(tmp_path):
    db = synthetic_zoo(families=("llama",), sizes=(1, 2), budgets=(0.25, 1.0), with_noise_feature=False)
    result, table = analyze(db, settings=Settings(bootstrap=10, forest_trees=5, permutation_repeats=1))
    assert table["model"].n_unique() == 4
    assert "architecture" not in result.dn.heldout and "size" in result.dn.heldout
    assert any("leave-one-architecture-out" in n for n in result.notes)
    json.loads(result.to_json())


def test_no_zoo_rows_is_a_clear_error(cli, shipped_copy):
    published = store.load(shipped_copy)
    published = Database(
        models=published.models.filter(~pl.col("family").str.starts_with("zoo-")),
        results=published.results.filter(pl.col("source_kind") != "collector"),
    )
    store.save(published, shipped_copy)
    with pytest.raises(QBayesError, match="no zoo models"):
        zoo_table(store.load(shipped_copy))
    res = cli("zoo", "analyze", "--data", shipped_copy, "--out", shipped_copy / "x.html")
    assert res.code != 0 and "no zoo models" in (res.err + res.out)
    assert not (shipped_copy / "x.html").exists()
