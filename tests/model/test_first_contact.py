"""What a new user meets first, through the command line on the small fit: typos refused,
bad files refused without a traceback or an output file, choose's table, compare, and
predictions of a long query file."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.model.predict import CHUNK_ROWS, Predictor
from qbayes.model.queries import query_table

QUERY = {
    "family": "OPT",
    "model": "OPT-13B",
    "params_b": 13.0,
    "train_tokens_b": 180.0,
    "method": "GPTQ",
    "w_bits": 4.0,
    "group_size": 128,
    "eval_set": "wikitext2",
    "fp16_ppl": 10.13,
}
CANDIDATE = {"family": "OPT", "model": "OPT-13B", "params_b": 13.0, "fp16_ppl": 10.13, "train_tokens_b": 180.0}
RUN = {k: v for k, v in QUERY.items() if k != "fp16_ppl"}
OPT_FLAGS = ("--family", "OPT", "--train-tokens-b", 180, "--candidate", "OPT-13B:13:10.13", "--draws", 100)


def _write(tmp_path, name: str, rows: list[dict], columns=None) -> str:
    path = tmp_path / name
    df = pl.DataFrame(rows) if rows else pl.DataFrame(schema={c: pl.String for c in columns})
    df.write_csv(path)
    return str(path)


def _command(kind: str, fit, tmp_path, path: str) -> list:
    """The command that reads ``path`` as its ``kind`` of file, writing under tmp_path/out."""
    out = tmp_path / "out.csv"
    other = _write(tmp_path, "other.csv", [RUN])
    return {
        "predict": ["predict", "--input", path, "--output", out],
        "choose": ["choose", "--budget-gb", 20, "--candidates", path, "--format", "Q4_K_M", "--output", out],
        "compare": ["compare", "Q4_K_M", "Q8_0", "--candidates", path, "--format", "Q4_K_M", "--format", "Q8_0"],
        "suggest-targets": ["suggest", "--targets", path, "--candidates", other, "--output", out],
        "suggest-candidates": ["suggest", "--targets", other, "--candidates", path, "--output", out],
    }[kind] + ["--fit", fit, "--draws", 100]


ROWS = {"predict": QUERY, "choose": CANDIDATE, "compare": CANDIDATE, "suggest-targets": RUN, "suggest-candidates": RUN}
BAD_FILES = {
    "empty": (lambda row: [], "no "),
    "typo family": (lambda row: [{**row, "family": "OTP"}], "did you mean 'OPT'"),
    "typo method": (lambda row: [{**row, "method": "GTPQ"}], "did you mean 'GPTQ'"),
    "task as evaluation set": (lambda row: [{**row, "eval_set": "hellaswag"}], "is a task"),
    "bad new_ok": (lambda row: [{**row, "family": "Zeta", "new_ok": "perhaps"}], "'new_ok' must be true or false"),
}


# (a candidates file of choose and compare has no method column: methods are flags there)
CASES = [(k, c) for k in ROWS for c in BAD_FILES if c != "typo method" or "method" in ROWS[k]]


@pytest.mark.parametrize(("kind", "case"), CASES)
def test_every_command_refuses_a_bad_file_clearly_and_writes_nothing(kind, case, small_fit_path, tmp_path, cli):
    make, message = BAD_FILES[case]
    rows = make(ROWS[kind])
    path = _write(tmp_path, "in.csv", rows, columns=list(ROWS[kind]))
    r = cli(*_command(kind, small_fit_path, tmp_path, path))
    assert r.code == 2, r.err
    assert message in r.err and "Traceback" not in r.err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("kind", list(ROWS))
def test_a_file_of_levels_new_on_purpose_is_answered(kind, small_fit_path, tmp_path, cli):
    # 'OTP' is one edit from OPT; new_ok says it is a family of its own
    path = _write(tmp_path, "in.csv", [{**ROWS[kind], "family": "OTP", "model": "OTP-13B", "new_ok": "true"}])
    r = cli(*_command(kind, small_fit_path, tmp_path, path))
    assert r.code == 0, r.err
    if kind != "compare":
        assert (tmp_path / "out.csv").exists()


OPTIONAL = {
    "format": ("Q4_K_M", {"method": None, "w_bits": None, "group_size": None}),
    "train_tokens_b": (None, {}),
    "arch": ("layernorm+relu", {}),
    "act_bits": (8, {}),
    "w_kind": ("int", {}),
    "bits_per_weight": (4.25, {}),
    "new_ok": ("false", {}),
    "note": ("kept as given", {}),
}


@pytest.mark.parametrize("column", list(OPTIONAL))
def test_predict_answers_with_each_optional_column(column, small_fit_path, tmp_path, cli):
    value, others = OPTIONAL[column]
    row = {**QUERY, column: value, **others}
    path = _write(tmp_path, "in.csv", [{k: v for k, v in row.items() if v is not None or k == column}])
    out = tmp_path / "out.csv"
    r = cli("predict", "--fit", small_fit_path, "--input", path, "--output", out, "--draws", 100)
    assert r.code == 0, r.err
    pred = pl.read_csv(out)
    assert pred.height == 1 and column in pred.columns and pred["ppl_q50"][0] > QUERY["fp16_ppl"]
    assert {"outside_params", "outside_tokens", "outside_bits", "outside_format_kind"} <= set(pred.columns)


CANDIDATE_OPTIONAL = {"train_tokens_b": None, "arch": "layernorm+relu", "eval_set": "c4", "new_ok": "false"}


@pytest.mark.parametrize("column", list(CANDIDATE_OPTIONAL))
def test_choose_answers_with_each_optional_candidate_column(column, small_fit_path, tmp_path, cli):
    row = {**CANDIDATE, column: CANDIDATE_OPTIONAL[column]}
    path = _write(tmp_path, "in.csv", [row])
    out = tmp_path / "out.csv"
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 30, "--candidates", path, "--format", "Q4_K_M")
    assert r.code == 0, r.err
    r = cli(*_command("choose", small_fit_path, tmp_path, path))
    assert r.code == 0, r.err
    options = pl.read_csv(out)
    assert options.height == 2  # Q4_K_M, and fp16 (over the 20 GB budget)
    assert options.filter(pl.col("format") == "Q4_K_M")["rank"].to_list() == [1]


def test_single_query_typo_is_refused_and_new_level_lets_it_through(small_fit_path, cli):
    args = ("predict", "--fit", small_fit_path, "--family", "OTP", "--params-b", 13, "--method", "GPTQ")
    args += ("--w-bits", 4, "--fp16-ppl", 10.13, "--draws", 100)
    r = cli(*args)
    assert r.code == 2 and "did you mean 'OPT'" in r.err and "--new-level" in r.err
    r = cli(*args, "--new-level")
    assert r.code == 0, r.err
    assert "new family" in r.out


def test_predict_flags_extrapolation_in_the_table(small_fit_path, cli):
    r = cli(
        "predict", "--fit", small_fit_path, "--family", "OPT", "--params-b", 1000, "--format", "IQ2_XXS",
        "--fp16-ppl", 8.0, "--draws", 100,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "size 1000B parameters lies outside the fitted" in r.out
    assert "no fitted row is an i-quant format" in r.out


def test_predict_prints_a_query_file_without_output_and_csv_with_dash(small_fit_path, tmp_path, cli):
    path = _write(tmp_path, "in.csv", [QUERY, {**QUERY, "w_bits": 3.0}])
    r = cli("predict", "--fit", small_fit_path, "--input", path, "--draws", 100)
    assert r.code == 0, r.err
    assert "2 predictions" in r.out and "OPT-13B" in r.out and "GPTQ w3 g128" in r.out
    r = cli("predict", "--fit", small_fit_path, "--input", path, "--output", "-", "--draws", 100)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert len(lines) == 3 and "ppl_q50" in lines[0]
    # a single query may be written to a file too
    out = tmp_path / "one.csv"
    args = ("--family", "OPT", "--params-b", 13, "--method", "GPTQ", "--w-bits", 4, "--fp16-ppl", 10.13)
    r = cli("predict", "--fit", small_fit_path, *args, "--output", out, "--draws", 100)
    assert r.code == 0, r.err
    assert pl.read_csv(out).height == 1


def test_long_query_file_with_a_new_family_in_one_chunk_only(small_fit):
    # the new family's training tokens are unknown: its chunk draws ln D from the population,
    # in another precision than the first chunk's; the two are stacked into one column
    rows = [QUERY] * CHUNK_ROWS + [{**QUERY, "family": "Zeta", "model": "Zeta-7B", "train_tokens_b": None}]
    q = query_table(pl.DataFrame(rows))
    pred = Predictor(small_fit, n_draws=50).predict(q)
    assert pred.height == CHUNK_ROWS + 1 and pred["new_family"].to_list()[-2:] == [False, True]
    assert pred["delta_q05"].dtype == pl.Float64


def test_suggest_labels_runs_given_by_format(small_fit_path, tmp_path, cli):
    fmt = {k: v for k, v in RUN.items() if k not in ("method", "w_bits", "group_size")}
    targets = _write(tmp_path, "t.csv", [{**fmt, "format": "Q4_K_M"}])
    cands = _write(tmp_path, "c.csv", [{**fmt, "format": "Q4_K_M"}, {**fmt, "format": "Q8_0"}])
    out = tmp_path / "ranked.csv"
    r = cli("suggest", "--fit", small_fit_path, "--targets", targets, "--candidates", cands, "--output", out)
    assert r.code == 0, r.err
    assert "OPT-13B Q4_K_M" in r.out and out.exists()


def test_choose_table_reads_as_a_user_needs(small_fit_path, tmp_path, cli):
    out = tmp_path / "options.csv"
    formats = ("--format", "Q2_K", "--format", "Q4_K_M", "--format", "Q5_K_M", "--format", "Q8_0")
    r = cli("choose", "--fit", small_fit_path, "--budget-gib", 12, *OPT_FLAGS, *formats, "--output", out)
    assert r.code == 0, r.err
    assert "Best options within 12 GiB" in r.out and "memory GiB" in r.out
    assert "P(within 1% of best)" in r.out and "vs best" in r.out
    assert "OPT-13B Q4_K_M" in r.out  # full names
    table = pl.read_csv(out)
    ranked = table.filter(pl.col("within_budget"))
    budget_gb = 12 * 2**30 / 1e9
    assert (ranked["memory_gb"] <= budget_gb).all()
    assert (table.filter(~pl.col("within_budget"))["memory_gb"] > budget_gb).all()
    assert {"p_best", "p_within_tolerance", "diff_q05", "diff_q50", "diff_q95"} <= set(table.columns)
    assert not table.filter(pl.col("method") == "fp16")["outside_bits"].any()  # measured, not predicted
    assert table.filter(pl.col("format") == "Q2_K")["outside_bits"].to_list() == [False]
    best = ranked.filter(pl.col("rank") == 1).row(0, named=True)
    assert best["p_within_tolerance"] == 1.0 and best["diff_q50"] == 0.0
    others = ranked.filter(pl.col("rank") > 1)
    assert ((others["p_within_tolerance"] >= 0) & (others["p_within_tolerance"] <= 1)).all()
    # Q8_0 (13.8 GB) is just over 12 GiB (12.9 GB): listed below the table as a near miss
    assert "Just over the budget" in r.out and "OPT-13B Q8_0" in r.out.split("Just over the budget")[1]
    # a wider tolerance can only make options count as good as the best more often
    wide = tmp_path / "wide.csv"
    r = cli("choose", "--fit", small_fit_path, "--budget-gib", 12, *OPT_FLAGS, *formats, "--tolerance", 20)
    assert r.code == 0 and "P(within 20% of best)" in r.out
    r = cli(
        "choose", "--fit", small_fit_path, "--budget-gib", 12, *OPT_FLAGS, *formats, "--tolerance", 20,
        "--output", wide,
    )  # fmt: skip
    loose = pl.read_csv(wide).filter(pl.col("within_budget")).sort("rank")["p_within_tolerance"].to_numpy()
    assert np.all(loose >= ranked.sort("rank")["p_within_tolerance"].to_numpy())


def test_choose_refuses_a_method_flag_that_is_a_typo(small_fit_path, cli):
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 20, *OPT_FLAGS, "--method", "GTPQ", "--w-bits", 4)
    assert r.code == 2 and "did you mean 'GPTQ'" in r.err


def test_choose_refuses_budgets_given_twice_or_not_at_all(small_fit_path, cli):
    r = cli("choose", "--fit", small_fit_path, *OPT_FLAGS, "--format", "Q4_K_M")
    assert r.code == 2 and "--budget-gib" in r.err
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 8, "--budget-gib", 8, *OPT_FLAGS, "--format", "Q4_K_M")
    assert r.code == 2 and "--budget-gib" in r.err


def test_choose_shows_collapses_and_three_significant_figures():
    from qbayes.cli.choose import ppl_text, sig3

    assert sig3(5.287) == "5.29" and sig3(14.23) == "14.2" and sig3(1234.5) == "1,230"
    assert ppl_text(1940888.5, 8.1) == "collapses" and ppl_text(8.137, 8.1) == "8.14"


def test_compare_prints_the_difference_of_two_options(small_fit_path, cli):
    formats = ("--format", "Q4_K_M", "--format", "Q8_0")
    r = cli("compare", "Q4_K_M", "q8_0", "--fit", small_fit_path, *OPT_FLAGS, *formats)
    assert r.code == 0, r.err
    assert "OPT-13B Q4_K_M minus OPT-13B Q8_0" in r.out and "P(OPT-13B Q4_K_M lower)" in r.out
    r = cli("compare", "Q4_K_S", "Q8_0", "--fit", small_fit_path, *OPT_FLAGS, *formats)
    assert r.code == 2 and "no option 'Q4_K_S'" in r.err and "Q4_K_M" in r.err
