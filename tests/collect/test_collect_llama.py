"""The whole collection path on a trained Llama-shaped model: every method in the tiny
grid, every feature, through the CLI, checked for real relations."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.cli import main  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import TINY  # noqa: E402


def run_cli(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.fixture(scope="module")
def shard(toy_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama") / "shard"
    code = run_cli(
        "collect",
        "--model",
        toy_models["llama"],
        "--family",
        "toy",
        "--grid",
        TINY,
        "--out",
        out,
        "--no-progress",
        "--seed",
        "3",
    )
    assert code == 0
    return store.load(out)  # validates: schema, keys, baselines


def rows(db, **where):
    df = db.results
    for k, v in where.items():
        df = df.filter(pl.col(k).is_null() if v is None else pl.col(k) == v)
    return df


def nll(db, method, label, eval_set="shakespeare"):
    r = rows(db, method=method, dtype_label=label, eval_set=eval_set)
    assert r.height == 1, (method, label, eval_set, r.height)
    return r["nll"][0]


def test_every_configuration_is_there_once(shard):
    res = shard.results
    expected = (
        {("none", "fp32")}
        | {
            ("RTN", f)
            for f in ("int2-g32", "int4-g32", "int8", "int4-g32-asym", "fp8", "nf4-g32", "mxint8", "mxint4", "mxfp4")
        }
        | {("quanto", "int8"), ("quanto", "fp8"), ("GPTQ", "int4-g32"), ("AWQ", "int4-g32-asym")}
    )
    assert set(zip(res["method"], res["dtype_label"])) == expected
    assert res.height == 2 * len(expected)  # two evaluation texts each
    assert set(res["eval_set"]) == {"shakespeare", "pystdlib"}
    assert set(res.filter(pl.col("method").is_in(["GPTQ", "AWQ"]))["calib_set"]) == {"shakespeare"}
    assert (
        res.filter(pl.col("method").is_in(["none", "RTN", "quanto"]))["calib_set"].null_count()
        == res.filter(pl.col("method").is_in(["none", "RTN", "quanto"])).height
    )


def test_baseline_protocol_and_models_row(shard):
    base = rows(shard, method="none", eval_set="shakespeare").row(0, named=True)
    assert base["w_kind"] == "float" and base["w_bits"] == 32 and base["seq_len"] == 128
    assert base["eval_tokens"] == 16 * 127  # 2048 tokens in windows of 128, first token unscored
    assert math.isclose(base["ppl"], math.exp(base["nll"])) and 0 < base["nll_se"] < 0.5
    assert base["nll"] < math.log(512)  # trained: better than uniform over the vocabulary
    model = shard.models.row(0, named=True)
    assert model["architecture"] == "llama" and model["family"] == "toy"
    assert 1e-4 < model["params_b"] < 1e-3 and model["non_embedding_params_b"] < model["params_b"]
    assert base["weight_bytes"] == round(model["params_b"] * 1e9) * 4


def test_quantization_hurts_more_at_fewer_bits(shard):
    base = nll(shard, "none", "fp32")
    d2, d4, d8 = (nll(shard, "RTN", f) - base for f in ("int2-g32", "int4-g32", "int8"))
    assert d2 > 0.02 and abs(d8) < 1e-3 and abs(d4) < d2 and abs(d8) < abs(d4) + 1e-3
    assert nll(shard, "RTN", "mxint4") - base > abs(nll(shard, "RTN", "mxint8") - base)


def test_sqnr_rises_with_bits_and_bytes_shrink(shard):
    rtn = rows(shard, method="RTN", eval_set="shakespeare")
    sq = dict(zip(rtn["dtype_label"], rtn["sqnr_db"]))
    assert sq["int2-g32"] < sq["int4-g32"] < sq["int8"]
    assert sq["mxint4"] < sq["mxint8"] and sq["nf4-g32"] > sq["int2-g32"]
    assert 20 < sq["int4-g32"] < 30 and sq["int8"] > 40  # ~6 dB per bit
    by = dict(zip(rtn["dtype_label"], rtn["weight_bytes"]))
    base_bytes = rows(shard, method="none", eval_set="shakespeare")["weight_bytes"][0]
    assert by["int2-g32"] < by["int4-g32"] < by["int8"] < base_bytes
    eff = dict(zip(rtn["dtype_label"], rtn["w_bits_eff"]))
    assert eff["int4-g32"] == pytest.approx(4.5) and eff["int4-g32-asym"] == pytest.approx(4 + 20 / 32)
    assert eff["mxfp4"] == pytest.approx(4.25)


def test_backends_agree_with_the_reference_where_they_should(shard):
    # quanto's int8 and fp8 are per-channel absmax, like the reference: same numbers
    for label in ("int8", "fp8"):
        q = rows(shard, method="quanto", dtype_label=label, eval_set="shakespeare").row(0, named=True)
        r = rows(shard, method="RTN", dtype_label=label, eval_set="shakespeare").row(0, named=True)
        assert q["sqnr_db"] == pytest.approx(r["sqnr_db"], abs=0.5)
        assert q["nll"] == pytest.approx(r["nll"], abs=2e-3)
        assert q["group_size"] is None and q["decode_tok_s"] > 0  # real kernel: speed measured
        assert q["weight_bytes"] < rows(shard, method="none", eval_set="shakespeare")["weight_bytes"][0]
    # calibrated methods: fake-quantized, no decode speed; within noise of RTN at 4 bits
    gptq = rows(shard, method="GPTQ", eval_set="shakespeare").row(0, named=True)
    awq = rows(shard, method="AWQ", eval_set="shakespeare").row(0, named=True)
    assert gptq["decode_tok_s"] is None and gptq["group_size"] == 32 and gptq["w_sym"] is True
    assert awq["w_sym"] is False and 10 < awq["sqnr_db"] < 40
    base = nll(shard, "none", "fp32")
    assert abs(gptq["nll"] - base) < 0.05 and abs(awq["nll"] - base) < 0.05


def test_self_checks_passed_and_are_recorded(shard):
    for method in ("RTN", "quanto", "GPTQ", "AWQ"):
        notes = rows(shard, method=method)["note"].to_list()
        assert all("self-check" in n for n in notes), (method, notes[0])
    assert not shard.failures.filter(pl.col("stage") == "self-check").height


def test_nothing_failed_and_kl_divergence_orders_the_formats(shard):
    assert shard.failures.height == 0
    base = rows(shard, method="none")
    assert base["kld_mean"].null_count() == base.height  # the reference has no KL from itself
    rtn = rows(shard, method="RTN", eval_set="shakespeare")
    kl = dict(zip(rtn["dtype_label"], rtn["kld_mean"]))
    assert 0 <= kl["int8"] < kl["int4-g32"] < kl["int2-g32"]
    assert (rows(shard, method="GPTQ")["top1_agree"] > 0.5).all()
    assert (shard.results.filter(pl.col("method") != "none")["eval_windows"] == 16).all()


def test_landscape_features(shard):
    feat = shard.features
    tr = feat.filter((pl.col("feature") == "hessian_trace") & (pl.col("scope") == "model")).row(0, named=True)
    assert tr["value"] > 0 and 0 < tr["se"] < tr["value"] and tr["eval_set"] == "shakespeare"
    layers = feat.filter((pl.col("feature") == "hessian_trace") & (pl.col("scope") != "model"))
    assert layers.height == 14  # 7 projections x 2 layers
    assert layers["value"].sum() == pytest.approx(tr["value"], rel=1e-6)
    eig = feat.filter(pl.col("feature") == "hessian_top_eig")["value"][0]
    assert 0 < eig < tr["value"]  # top eigenvalue of a (mostly) positive Hessian is below its trace
    radial = feat.filter(pl.col("feature") == "radial_loss").sort("radius")
    assert radial["radius"].to_list() == [0.01, 0.1]
    assert radial["value"][1] > radial["value"][0]  # loss rises away from the trained weights


def test_outlier_features_per_calibration_kind(shard):
    feat = shard.features
    model = feat.filter(pl.col("scope") == "model")
    for calib in ("shakespeare", "pystdlib", "noise"):
        got = {r["feature"]: r["value"] for r in model.filter(pl.col("calib_set") == calib).iter_rows(named=True)}
        assert set(got) == {"act_max_abs", "act_median_abs", "act_kurtosis", "act_outlier_frac"}
        assert got["act_max_abs"] > got["act_median_abs"] > 0 and got["act_kurtosis"] > 1
        assert 0 <= got["act_outlier_frac"] <= 1
        per_layer = feat.filter(
            (pl.col("calib_set") == calib) & (pl.col("feature") == "act_max_abs") & (pl.col("scope") != "model")
        )
        assert per_layer.height == 14 and per_layer["value"].max() == pytest.approx(got["act_max_abs"])
    w = {
        r["feature"]: r["value"]
        for r in model.filter(pl.col("calib_set").is_null() & pl.col("eval_set").is_null()).iter_rows(named=True)
    }
    assert w["weight_kurtosis"] > 2 and w["weight_max_over_std"] > 3


def test_provenance_columns(shard):
    for df in (shard.results, shard.features):
        assert df["run_id"].n_unique() == 1 and df["seed"].unique().to_list() == [3]
        assert df["created_at"].null_count() == 0 and df["wall_s"].null_count() == 0
        versions = json.loads(df["lib_versions"][0])
        assert versions["torch"].startswith("2.13") and versions["llmcompressor"] and versions["python"]
        assert df["device"][0].startswith("cpu")
    assert set(shard.results["source"]) == {"qbayes-collect"} and set(shard.results["source_kind"]) == {"collector"}
