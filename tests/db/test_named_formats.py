"""Formats by the names people type (qbayes.db.named_formats, data/formats.csv): the table,
lookups and labels, queries with a ``format`` column, and ``qbayes predict --format``."""

from __future__ import annotations

import polars as pl
import pytest

from qbayes.db import named_formats
from qbayes.errors import QBayesError
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table

from helpers import ROOT

TABLE = ROOT / "data" / "formats.csv"
LLAMA_7B = {"family": "LLaMA-1", "model": "LLaMA-7B", "params_b": 7.0, "eval_set": "wikitext2", "fp16_ppl": 5.91}


def _table() -> pl.DataFrame:
    return pl.read_csv(TABLE, infer_schema=False)


def _query(**columns) -> pl.DataFrame:
    return pl.DataFrame({k: [v] for k, v in {**LLAMA_7B, **columns}.items()})


# --- the table -----------------------------------------------------------------------


def test_every_name_and_alias_of_the_table_resolves_to_its_row():
    for r in _table().iter_rows(named=True):
        spellings = [
            r["name"],
            r["name"].lower(),
            r["name"].replace("_", "-"),
            *(a for a in (r["aliases"] or "").split(";") if a),
        ]
        for s in spellings:
            f = named_formats.lookup(s)
            assert f.name == r["name"], s
            assert f.w_bits == float(r["w_bits"]) and f.bits_per_weight == float(r["bits_per_weight"])
            assert f.method == r["method"] and f.w_kind == r["w_kind"]
            assert f.source == r["source"]


def test_the_table_covers_the_llama_cpp_types_people_type():
    names = set(named_formats.load().names)
    wanted = {
        "Q2_K",
        "Q3_K_S",
        "Q3_K_M",
        "Q3_K_L",
        "Q4_K_S",
        "Q4_K_M",
        "Q5_K_S",
        "Q5_K_M",
        "Q6_K",
        "Q8_0",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "IQ1_S",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ4_XS",
        "IQ4_NL",
        "nf4",
        "fp8",
        "mxfp4",
    }
    assert wanted <= names
    # llama.cpp's own aliases (quantize.cpp QUANT_OPTIONS): Q4_K is Q4_K_M
    assert named_formats.lookup("Q4_K").name == "Q4_K_M" and named_formats.lookup("q3_k").name == "Q3_K_M"


def test_k_quant_mixes_cost_more_than_their_nominal_bits_and_order_by_size():
    table = named_formats.load()
    for f in table.formats:
        if f.method == "llama.cpp-kquant":
            assert f.bits_per_weight > f.w_bits
    bpw = {f.name: f.bits_per_weight for f in table.formats}
    for small, large in (
        ("Q3_K_S", "Q3_K_M"),
        ("Q3_K_M", "Q3_K_L"),
        ("Q4_K_S", "Q4_K_M"),
        ("Q5_K_S", "Q5_K_M"),
        ("IQ2_XXS", "IQ2_XS"),
        ("Q4_K_M", "Q5_K_S"),
        ("Q6_K", "Q8_0"),
    ):
        assert bpw[small] < bpw[large]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("Q4_K_M,Q4_K,", "Q4_K_M,Q4-K-S,", 1), "'Q4-K-S' is also 'Q4_K_S'"),
        (
            lambda t: t.replace(",llama.cpp-kquant,kquant,6,256,", ",llama.cpp-kquants,kquant,6,256,", 1),
            "method 'llama.cpp-kquants' is not one of",
        ),
        (
            lambda t: t.replace(",RTN,mx,4,32,4.25,", ",RTN,microscaled,4,32,4.25,", 1),
            "w_kind 'microscaled' is not one of",
        ),
        (lambda t: t.replace(",4,256,4.8944,", ",4,256,3.9,", 1), "bits_per_weight 3.9 is below w_bits 4"),
        (lambda t: t.replace(",4,256,4.8944,", ",4,256,four,", 1), "column 'bits_per_weight': 'four' is not a float"),
    ],
)
def test_a_broken_table_is_refused_with_the_reason(tmp_path, edit, message):
    bad = tmp_path / "formats.csv"
    text = TABLE.read_text()
    assert edit(text) != text
    bad.write_text(edit(text))
    with pytest.raises(QBayesError, match=message.replace("(", r"\(").replace(".", r"\.")):
        named_formats.load(bad)


# --- labels and unknown names ------------------------------------------------------------


def test_labels_are_read_by_pattern_and_leave_the_method_open():
    int4 = named_formats.lookup("int4-g128")
    assert (int4.w_kind, int4.w_bits, int4.group_size, int4.method) == ("int", 4.0, 128, None)
    for same in ("w4a16-g128", "W4A16G128", "int4_g128", "w4g128"):
        f = named_formats.lookup(same)
        assert (f.w_kind, f.w_bits, f.group_size, f.method) == ("int", 4.0, 128, None), same
    assert named_formats.lookup("w4a16-g128").act_bits == 16.0 and named_formats.lookup("w4a8").act_bits == 8.0
    w3 = named_formats.lookup("w3g128")
    assert (w3.w_bits, w3.group_size) == (3.0, 128)
    int8 = named_formats.lookup("int8")
    assert (int8.w_bits, int8.group_size) == (8.0, None)  # one scale per output channel
    nf = named_formats.lookup("nf4-g64")  # the collector's spelling: scales counted as 16 bits
    assert (nf.w_kind, nf.group_size) == ("nf", 64) and nf.bits_per_weight == pytest.approx(4 + 16 / 64)


@pytest.mark.parametrize(
    "name, close", [("Q4_K_X", "Q4_K_"), ("q5_k_mm", "Q5_K_M"), ("nf5", "nf4"), ("IQ2_XXXS", "IQ2_")]
)
def test_an_unknown_name_gets_the_closest_names(name, close):
    with pytest.raises(QBayesError) as err:
        named_formats.lookup(name)
    msg = str(err.value)
    assert f"unknown format '{name}' (did you mean '{close}" in msg
    assert "int4-g128" in msg  # and how labels are written


def test_nonsense_gets_no_suggestion_but_the_list():
    with pytest.raises(QBayesError, match=r"unknown format 'awq-best'; known: Q2_K, .*a label such as"):
        named_formats.lookup("awq-best")


# --- queries -----------------------------------------------------------------------------


def test_a_format_query_uses_the_tables_bits_per_weight_as_the_bits_covariate():
    q = query_table(_query(format="Q4_K_M")).row(0, named=True)
    f = named_formats.lookup("Q4_K_M")
    assert (q["method"], q["w_bits"], q["group_size"], q["w_kind"]) == (f.method, f.w_bits, f.group_size, f.w_kind)
    assert q["bits"] == f.bits_per_weight and q["act_bits"] == 16.0
    # the same configuration spelled out, with bits_per_weight, is the same query but for the
    # format's name, which gives the named query its format's effect (test_format_effects.py)
    assert q["format"] == "Q4_K_M"
    spelled = query_table(
        _query(
            method=f.method,
            w_bits=f.w_bits,
            group_size=f.group_size,
            w_kind=f.w_kind,
            bits_per_weight=f.bits_per_weight,
        )
    ).row(0, named=True)
    assert spelled == {**q, "format": None}


def test_a_label_query_is_the_explicit_configuration_with_the_querys_method():
    by_label = query_table(_query(format="w4a16-g128", method="GPTQ"))
    explicit = query_table(_query(method="GPTQ", w_bits=4.0, group_size=128))
    assert by_label.equals(explicit)
    assert query_table(_query(format="int3-g128"))["method"].item() == named_formats.DEFAULT_METHOD


def test_rows_without_a_format_keep_their_own_columns_and_defaults():
    q = pl.DataFrame(
        {
            **{k: [v, v] for k, v in LLAMA_7B.items()},
            "format": ["Q6_K", None],
            "method": [None, "AWQ"],
            "w_bits": [None, 3.0],
        }
    )
    t = query_table(q)
    assert t["method"].to_list() == ["llama.cpp-kquant", "AWQ"]
    assert t["w_kind"].to_list() == ["kquant", "int"] and t["act_bits"].to_list() == [16.0, 16.0]
    assert t["bits"][1] == 3.0


def test_a_nominal_k_quant_width_naming_one_format_is_that_format():
    # Q6_K is the only 6-bit k-quant: nominal bits 6 is its configuration, bits per weight included
    nominal = query_table(_query(method="llama.cpp-kquant", w_bits=6.0)).row(0, named=True)
    assert nominal == query_table(_query(format="Q6_K")).row(0, named=True)
    assert nominal["bits"] == named_formats.lookup("Q6_K").bits_per_weight


def test_a_nominal_k_quant_width_of_several_formats_is_refused_with_their_names():
    # read as 2.0 bits per weight, this query predicted Q2_K (3.16 bits per weight) far too high
    with pytest.raises(QBayesError) as err:
        query_table(_query(method="llama.cpp-kquant", w_bits=2.0, group_size=256))
    msg = str(err.value)
    assert "a family of mixed formats, not one bit width (rows [1])" in msg
    for name in ("Q2_K (3.1593 bits per weight)", "Q2_K_S", "IQ2_XS"):
        assert name in msg
    assert "Q3_K" not in msg
    # bits per weight given by the user is an explicit configuration, and kept
    given = query_table(_query(method="llama.cpp-kquant", w_bits=2.0, group_size=256, bits_per_weight=3.1593))
    assert given["bits"].item() == 3.1593
    # uniform formats keep the database's convention
    assert query_table(_query(method="llama.cpp-legacy", w_bits=4.0, group_size=32))["bits"].item() == 4.0 + 20 / 32


def test_predict_cli_refuses_a_nominal_k_quant_width_and_writes_nothing(small_fit_path, tmp_path, cli):
    out = tmp_path / "p.csv"
    args = _flags(method="llama.cpp-kquant", w_bits=2, group_size=256)
    r = cli("predict", "--fit", small_fit_path, *args, "--output", out)
    assert r.code == 2 and "give the format by name" in r.err and "Q2_K_S" in r.err
    assert not out.exists()


@pytest.mark.parametrize(
    "columns, message",
    [
        (
            {"format": "Q4_K_M", "method": "GPTQ"},
            "method GPTQ contradicts format 'Q4_K_M', whose method is llama.cpp-kquant (rows [1])",
        ),
        ({"format": "Q4_K_M", "w_bits": 3.0}, "w_bits 3.0 contradicts format 'Q4_K_M', whose w_bits is 4"),
        (
            {"format": "fp8", "group_size": 128},
            "group_size 128 contradicts format 'fp8', whose group_size is per channel",
        ),
        ({"format": "Q4_K_Z"}, "unknown format 'Q4_K_Z' (did you mean 'Q4_K_"),
    ],
)
def test_a_format_contradicted_by_its_row_is_refused(columns, message):
    with pytest.raises(QBayesError) as err:
        query_table(_query(**columns), where="q.csv")
    assert str(err.value).startswith("q.csv: ") and message in str(err.value)


def test_a_format_predicts_as_its_configuration_and_is_no_new_method(small_fit):
    """The issue's case: Q4_K_M given as a method is an unseen method with a wide interval;
    named as a format it is llama.cpp's k-quant at its bits per weight."""
    as_format = query_table(pl.concat([_query(format="Q4_K_M"), _query(format="Q2_K")], how="diagonal"))
    as_method = query_table(_query(method="Q4_K_M", w_bits=4.0))
    pred = Predictor(small_fit, n_draws=400, seed=3).predict(pl.concat([as_format, as_method]))
    q4, q2, mistaken = pred.row(0, named=True), pred.row(1, named=True), pred.row(2, named=True)
    assert not q4["new_method"] and not q4["new_w_kind"] and mistaken["new_method"]
    assert q2["ppl_q50"] > q4["ppl_q50"] > LLAMA_7B["fp16_ppl"]
    assert q4["ppl_q95"] - q4["ppl_q05"] < mistaken["ppl_q95"] - mistaken["ppl_q05"]


# --- qbayes predict --format -----------------------------------------------------------------


def _flags(**extra):
    base = ("--family", "LLaMA-1", "--params-b", 7, "--fp16-ppl", 5.91, "--draws", 200)
    return (*base, *(x for k, v in extra.items() for x in (f"--{k.replace('_', '-')}", v)))


def test_predict_cli_takes_a_format_name(small_fit_path, cli):
    r = cli("predict", "--fit", small_fit_path, *_flags(format="q4_k_m"))
    assert r.code == 0, r.err
    bpw = named_formats.lookup("Q4_K_M").bits_per_weight
    out = " ".join(r.out.split())  # the table's title may wrap
    assert f"Q4_K_M (llama.cpp-kquant w4 g256 a16, {bpw:.2f} bits per weight)" in out
    assert "new method" not in r.out


def test_predict_cli_format_and_explicit_flags_agree(arch_fit_path, tmp_path, cli):
    """For a model without format effects (hierarchical-v1), --format is the same query as its
    configuration spelled out, and the output file says what the name was read as (the default
    model adds the format's own effect: tests/model/test_format_effects.py)."""
    src, out = tmp_path / "q.csv", tmp_path / "p.csv"
    f = named_formats.lookup("IQ4_XS")
    pl.concat(
        [
            _query(format="IQ4_XS"),
            _query(
                method=f.method,
                w_bits=f.w_bits,
                group_size=f.group_size,
                w_kind=f.w_kind,
                bits_per_weight=f.bits_per_weight,
            ),
        ],
        how="diagonal",
    ).write_csv(src)
    r = cli("predict", "--fit", arch_fit_path, "--input", src, "--output", out, "--draws", 200)
    assert r.code == 0, r.err
    assert "not used for prediction" not in r.err
    pred = pl.read_csv(out)
    assert pred["format"].to_list() == ["IQ4_XS", None]
    assert pred["method"].to_list() == [f.method] * 2 and pred["bits_per_weight"].to_list() == [f.bits_per_weight] * 2
    assert pred["ppl_q50"][0] == pred["ppl_q50"][1] and pred["ppl_q95"][0] == pred["ppl_q95"][1]


def test_predict_cli_unknown_format_suggests_and_writes_nothing(small_fit_path, tmp_path, cli):
    r = cli("predict", "--fit", small_fit_path, *_flags(format="Q4_K_MM"))
    assert r.code == 2 and "unknown format 'Q4_K_MM' (did you mean 'Q4_K_M'?)" in r.err and r.out == ""
    src, out = tmp_path / "q.csv", tmp_path / "p.csv"
    pl.concat([_query(format="Q5_K_M"), _query(format="mxfp3")]).write_csv(src)
    r = cli("predict", "--fit", small_fit_path, "--input", src, "--output", out)
    assert r.code == 2 and "unknown format 'mxfp3' (did you mean 'mxfp4'?)" in r.err and "(rows [2])" in r.err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_predict_cli_says_when_a_method_is_a_format_name(small_fit_path, cli):
    r = cli("predict", "--fit", small_fit_path, *_flags(method="Q4_K_M", w_bits=4))
    assert r.code == 0, r.err
    assert "method 'Q4_K_M' is the format Q4_K_M (llama.cpp-kquant" in r.err and "give it as --format Q4_K_M" in r.err
    r = cli("predict", "--fit", small_fit_path, *_flags(method="BrandNewMethod", w_bits=4))
    assert r.code == 0 and "is the format" not in r.err


def test_predict_cli_without_format_still_needs_method_and_bits(small_fit_path, cli):
    r = cli("predict", "--fit", small_fit_path, *_flags())
    assert r.code == 2 and "--method, --w-bits (or --format instead of --method and --w-bits)" in r.err
