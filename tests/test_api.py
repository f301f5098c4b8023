"""The public Python API (qbayes.load, Model.predict): the same table as ``qbayes predict``
on the same input, polars or pandas in and out, and the command line's errors as
QBayesError. Predicts from the shipped posterior (no fit of its own)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

import qbayes
from qbayes.model import fitfile
from qbayes.model.predict import OUTPUT_COLUMNS

QUERIES = {
    "family": ["Qwen2.5", "Qwen2.5", "LLaMA-2"],
    "model": ["Qwen2.5-7B", "Qwen2.5-7B", "LLaMA-2-7B"],
    "params_b": ["7", "7", "7"],
    "format": ["Q4_K_M", "int3-g128", None],
    "method": [None, "GPTQ", "AWQ"],
    "w_bits": [None, None, "4"],
    "group_size": [None, None, "128"],
    "eval_set": ["wikitext2"] * 3,
    "fp16_ppl": ["6.85", "6.85", "5.47"],
    "task": ["mmlu", None, None],
    "fp16_acc": ["74.2", None, None],
}
DRAWS = 200


@pytest.fixture(scope="module")
def model():
    return qbayes.load(n_draws=DRAWS)


def test_python_and_command_line_give_the_same_table(model, tmp_path, cli):
    path, out = tmp_path / "q.csv", tmp_path / "p.csv"
    pl.DataFrame(QUERIES).write_csv(path)
    r = cli("predict", "--input", path, "--output", out, "--draws", DRAWS)
    assert r.code == 0, r.err
    from_cli = pl.read_csv(out)
    from_py = model.predict(pl.read_csv(path, infer_schema=False, null_values=[""]))
    assert from_py.columns == from_cli.columns
    assert {"acc_q50", "outside_bits", "bits_per_weight"} <= set(from_py.columns)
    for c in (*OUTPUT_COLUMNS[:7], "acc_q05", "acc_q95"):
        np.testing.assert_allclose(from_py[c].cast(pl.Float64), from_cli[c], rtol=1e-9, err_msg=c)
    # accuracy only where a task is named
    assert from_py["acc_q50"].null_count() == 2 and 0 < from_py["acc_q50"][0] < 74.2


def test_pandas_in_pandas_out_with_typed_columns(model):
    typed = (
        pl.DataFrame(QUERIES)
        .drop("task", "fp16_acc")
        .with_columns(pl.col("params_b", "w_bits", "fp16_ppl").cast(pl.Float64), pl.col("group_size").cast(pl.Int64))
    )
    got = model.predict(typed.to_pandas())
    assert isinstance(got, pd.DataFrame) and len(got) == 3
    want = model.predict(typed)
    np.testing.assert_allclose(got["ppl_q50"].to_numpy(), want["ppl_q50"].to_numpy())
    # the median perplexity lies above the unquantized one and inside its interval
    assert (want["ppl_q05"] <= want["ppl_q50"]).all() and (want["ppl_q50"] > want["fp16_ppl"]).all()


def test_observed_row_adds_its_columns_and_moves_the_prediction(model):
    q = pl.DataFrame(QUERIES).drop("task", "fp16_acc", "format").slice(2, 1)
    measured = q.with_columns(pl.lit("9.0").alias("ppl"))  # far above the prediction
    plain, cond = model.predict(q), model.predict(q, observed=measured)
    assert {"obs_ess", "obs_n", "obs_min_p"} <= set(cond.columns)
    assert cond["obs_n"][0] == 1
    assert cond["ppl_q50"][0] > plain["ppl_q50"][0]
    assert any("conditioned on 1 observed rows" in n for n in model.notes)


def test_bad_input_raises_the_command_lines_error(model, tmp_path, cli):
    with pytest.raises(qbayes.QBayesError, match="queries must be a polars or pandas DataFrame, not dict"):
        model.predict(QUERIES)
    bad = pl.DataFrame({**QUERIES, "params_b": ["seven", "7", "7"]})
    with pytest.raises(qbayes.QBayesError) as exc:
        model.predict(bad)
    path = tmp_path / "bad.csv"
    bad.write_csv(path)
    r = cli("predict", "--input", path, "--output", tmp_path / "out.csv", "--draws", DRAWS)
    assert r.code == 2 and not (tmp_path / "out.csv").exists()
    # the same message, naming the file on the command line and "queries" in Python
    assert str(exc.value) == "queries: column 'params_b' has values that are not Float64 in rows [1]"
    assert f"{path}: column 'params_b' has values that are not Float64 in rows [1]" in " ".join(r.err.split())
    with pytest.raises(qbayes.QBayesError, match="n_draws"):
        qbayes.load(n_draws=10)
    with pytest.raises(qbayes.QBayesError, match="candidates must be a polars or pandas DataFrame, not list"):
        model.choose([1, 2], budget_gb=8)
    # refused before any sampling
    with pytest.raises(qbayes.QBayesError, match="observed must be a polars or pandas DataFrame, not dict"):
        qbayes.fit(observed={"ppl": [6.0]})


def test_the_fit_is_arviz_readable(model):
    from arviz_stats import summary

    s = summary(model.fit.idata, var_names=["intercept", "bits_rate"], kind="diagnostics")
    assert len(s) >= 1 and (s["r_hat"] < 1.05).all()


CANDIDATES = {
    "family": ["Qwen2.5", "Qwen2.5"],
    "model": ["Qwen2.5-7B", "Qwen2.5-14B"],
    "params_b": ["7.6", "14.7"],
    "fp16_ppl": ["6.85", "5.29"],
}


def test_choose_in_python_and_on_the_command_line_gives_the_same_options(model, tmp_path, cli):
    path, out = tmp_path / "c.csv", tmp_path / "o.csv"
    pl.DataFrame(CANDIDATES).write_csv(path)
    formats = ("Q4_K_M", "Q8_0", "int3-g128")
    r = cli(
        "choose", "--candidates", path, "--budget-gib", 10, *(a for f in formats for a in ("--format", f)),
        "--output", out, "--draws", DRAWS,
    )  # fmt: skip
    assert r.code == 0, r.err
    from_cli = pl.read_csv(out)
    cands = pl.read_csv(path, infer_schema=False)
    from_py = qbayes.choose(cands, model=model, budget_gib=10, formats=formats)
    assert from_py.columns == from_cli.columns and from_py.height == from_cli.height
    assert from_py["rank"].to_list() == from_cli["rank"].to_list()
    for c in ("memory_gb", "ppl_q50", "p_best", "p_within_tolerance"):
        np.testing.assert_allclose(from_py[c].cast(pl.Float64), from_cli[c], rtol=1e-9, err_msg=c)
    # within the budget (10 GiB) and nothing over it ranked
    ranked = from_py.filter(pl.col("rank").is_not_null())
    assert ranked.height > 0 and (ranked["memory_gb"] <= 10 * 2**30 / 1e9).all()
    with pytest.raises(qbayes.QBayesError, match="give the memory budget with"):
        qbayes.choose(cands, model=model, formats=formats)


def test_fit_in_python_and_on_the_command_line_fit_the_same_rows_and_model(tmp_path, cli, table):
    others = sorted(set(table["family"]) - {"OPT", "LLaMA-1"})
    excluded = [a for f in others for a in ("--exclude-family", f)]
    out = tmp_path / "cli.nc"
    sampling = ("--draws", 30, "--tune", 30, "--chains", 1, "--seed", 3)
    r = cli("fit", *excluded, *sampling, "--out", out, "--allow-bad-fit")
    assert r.code == 0, r.err
    from_cli = fitfile.load(out)
    fit = qbayes.fit(exclude_families=others, draws=30, tune=30, chains=1, seed=3)
    assert (fit.info.n_rows, fit.info.data_hash, fit.spec.hash) == (
        from_cli.info.n_rows,
        from_cli.info.data_hash,
        from_cli.spec.hash,
    )
    assert set(fit.data["family"]) == {"OPT", "LLaMA-1"}
    post = fit.idata["posterior"]
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 30
    assert set(post.data_vars) == set(from_cli.idata["posterior"].data_vars)
