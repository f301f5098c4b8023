"""The public Python API: each command and its Python function give the same result on one
input (predict, choose, compare, suggest, fit, fit-accuracy, validate and validate --target
accuracy; the report in tests/report/test_report_api.py), polars or pandas in and out, and
the command line's errors as QBayesError for bad input and wrong types. Predicts from the
shipped posterior; the fits are small (one chain, tens of draws).
"""

from __future__ import annotations

import json
import re

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


def test_quantiles_choose_the_perplexity_columns_in_python_and_on_the_command_line(model, tmp_path, cli):
    q = pl.DataFrame(QUERIES).drop("task", "fp16_acc")
    path, out = tmp_path / "q.csv", tmp_path / "p.csv"
    q.write_csv(path)
    r = cli("predict", "--input", path, "--output", out, "--draws", DRAWS, "--quantile", 0.9, "--quantile", 0.1)
    assert r.code == 0, r.err
    from_cli = pl.read_csv(out)
    from_py = model.predict(q, quantiles=[0.9, 0.1])
    assert from_py.columns == from_cli.columns
    ppl = [c for c in from_py.columns if c.startswith("ppl_q")]
    assert ppl == ["ppl_q10", "ppl_q90"]  # sorted, and the default five left out
    for c in (*ppl, "delta_q50"):
        np.testing.assert_allclose(from_py[c], from_cli[c], rtol=1e-9, err_msg=c)
    # the same draws as the default quantiles: the 10% quantile lies between the 5% and 25%
    default = model.predict(q)
    assert (default["ppl_q05"] <= from_py["ppl_q10"]).all() and (from_py["ppl_q10"] <= default["ppl_q25"]).all()
    for bad, message in (
        ([0.025], "not a whole percent"),
        ([1.5], "probabilities from 0.01 to 0.99"),
        ("0.5", "must be a non-empty list"),
        (["0.5"], "probabilities from 0.01 to 0.99, not '0.5'"),
    ):
        with pytest.raises(qbayes.QBayesError, match=message):
            model.predict(q, quantiles=bad)


def test_compare_in_python_and_on_the_command_line_gives_the_same_figures(model, tmp_path, cli):
    path = tmp_path / "c.csv"
    pl.DataFrame(CANDIDATES).write_csv(path)
    formats = ("Q4_K_M", "Q8_0")
    flags = [a for f in formats for a in ("--format", f)]
    r = cli("compare", "Qwen2.5-14B Q4_K_M", "Qwen2.5-7B Q8_0", "--candidates", path, *flags, "--draws", DRAWS)
    assert r.code == 0, r.err
    c = qbayes.compare(
        pl.read_csv(path, infer_schema=False), "Qwen2.5-14B Q4_K_M", "Qwen2.5-7B Q8_0", model=model, formats=formats
    )
    assert (c.first, c.second) == ("Qwen2.5-14B Q4_K_M", "Qwen2.5-7B Q8_0")
    assert c.options["model"].to_list() == ["Qwen2.5-14B", "Qwen2.5-7B"]
    text = " ".join(r.out.split())
    assert f"difference: 5% {c.difference[0.05]:+.3g}, 25% {c.difference[0.25]:+.3g}" in text
    assert f"relative difference: median {c.relative[0.5]:+.2%}" in text
    assert f"P(Qwen2.5-14B Q4_K_M lower) {c.p_first_lower:.2f}" in text
    assert f"P(within 1% of each other) {c.p_within_tolerance:.2f}" in text
    assert 0 <= c.p_first_lower <= 1 and c.difference[0.05] <= c.difference[0.5] <= c.difference[0.95]
    with pytest.raises(qbayes.QBayesError, match="no option 'Q5_K_M'"):
        model.compare(pl.read_csv(path, infer_schema=False), "Q5_K_M", "Q8_0", formats=formats)


TARGETS = {
    "family": ["Qwen2.5"],
    "model": ["Qwen2.5-14B"],
    "params_b": ["14.7"],
    "format": ["Q3_K_M"],
    "eval_set": ["wikitext2"],
}
RUNS = {
    "family": ["Qwen2.5"] * 3,
    "model": ["Qwen2.5-0.5B", "Qwen2.5-7B", "Qwen2.5-14B"],
    "params_b": ["0.5", "7.6", "14.7"],
    "format": ["Q3_K_M"] * 3,
    "eval_set": ["wikitext2"] * 3,
}


def test_suggest_in_python_and_on_the_command_line_ranks_the_same_runs(model, tmp_path, cli):
    targets, cands, out = tmp_path / "t.csv", tmp_path / "c.csv", tmp_path / "ranked.csv"
    pl.DataFrame(TARGETS).write_csv(targets)
    pl.DataFrame(RUNS).write_csv(cands)
    r = cli(
        "suggest", "--targets", targets, "--candidates", cands, "--output", out, "--top", 2, "--draws", DRAWS,
    )  # fmt: skip
    assert r.code == 0, r.err
    from_cli = pl.read_csv(out)
    s = model.suggest(
        pl.read_csv(targets, infer_schema=False), pl.read_csv(cands, infer_schema=False).to_pandas(), top=2
    )
    assert isinstance(s.table, pd.DataFrame)  # pandas in, pandas out
    from_py = pl.from_pandas(s.table)
    assert from_py.columns == from_cli.columns
    assert from_py["model"].to_list() == from_cli["model"].to_list()
    assert from_py["chosen"].to_list() == from_cli["chosen"].to_list() and sum(from_py["chosen"]) == 2
    np.testing.assert_allclose(from_py["var_reduction"], from_cli["var_reduction"], rtol=1e-9)
    # the chosen runs first, in the order chosen, and the chosen shown by the property
    assert from_py["choice_order"].to_list()[:2] == [1, 2] and from_py["chosen"].to_list()[:2] == [True, True]
    assert pl.from_pandas(s.chosen)["model"].to_list() == from_py["model"].to_list()[:2]
    assert any("share one new-study effect" in n for n in model.notes)


def test_validate_in_python_and_on_the_command_line_scores_the_same(tmp_path, cli):
    sampling = dict(draws=10, tune=10, chains=1, seed=5)  # the fold fits' compilation is most of the time
    out, rows = tmp_path / "v.json", tmp_path / "rows.csv"
    r = cli(
        "validate", "--family", "Falcon", "--model", "pooled", "--baseline", "cell_median",
        *(a for k, v in sampling.items() for a in (f"--{k}", v)), "--json", out, "--predictions", rows,
    )  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    v = qbayes.validate(models=["pooled"], baselines=["cell_median"], families=["Falcon"], **sampling)
    assert v.summary.to_dict() == doc
    assert v.per_family["family"].to_list() == ["Falcon", "Falcon"]
    assert set(v.overall["model"]) == {"pooled", "cell_median"}
    assert {"mdae", "cov90", "crps", "n"} <= set(v.overall.columns)
    from_cli = pl.read_csv(rows)
    # a row per held-out row and model, the classifiers of delta > 1 nat among the models
    assert v.predictions.height == from_cli.height == v.predictions["predicted_by"].n_unique() * v.overall["n"][0]
    assert {"pooled", "cell_median"} <= set(v.predictions["predicted_by"])
    np.testing.assert_allclose(v.predictions["delta_q50"], from_cli["delta_q50"], rtol=1e-9)  # null: classifiers
    assert v.gaps["reference"].to_list() == ["pooled"] and v.reveal.is_empty()


def test_every_entry_point_refuses_wrong_types_before_any_work(model, tmp_path):
    cands = pl.DataFrame(CANDIDATES)
    targets = pl.DataFrame(TARGETS)
    report = tmp_path / "r.html"
    calls = [
        (lambda: qbayes.load(123), "path must be a path"),
        (lambda: qbayes.load(seed="0"), "seed must be an integer"),
        (lambda: model.predict(QUERIES), "queries must be a polars or pandas DataFrame, not dict"),
        (lambda: model.predict(targets, observed={"ppl": [7.0]}), "observed must be a polars or pandas"),
        (lambda: model.choose(cands, budget_gb="8"), "budget_gb must be a number, not str '8'"),
        (lambda: model.choose(cands, budget_gb=8, w_bits="4"), "w_bits must be a list of numbers"),
        (lambda: model.choose(cands, budget_gb=8, formats=[4]), "formats must be a string or a list of strings"),
        (lambda: model.choose(cands, budget_gb=8, tolerance="1"), "tolerance must be a number"),
        (lambda: model.choose(cands, budget_gb=8, eval_set=3), "eval_set must be a string, not int 3"),
        (lambda: model.choose(cands, budget_gb=8, group_sizes="128"), "group_sizes must be a list of integers"),
        (lambda: model.choose(cands, budget_gb=8, task="mmlu", fp16_acc="70"), "fp16_acc must be a number"),
        (lambda: model.predict(targets, new_level="yes"), "new_level must be True or False, not 'yes'"),
        (lambda: model.compare(cands, 4, "Q8_0", formats=["Q8_0"]), "an option is named by a string"),
        (lambda: model.suggest(dict(TARGETS), cands), "targets must be a polars or pandas DataFrame, not dict"),
        (lambda: model.suggest(targets, targets, top="2"), "top must be an integer"),
        (lambda: model.suggest(targets, targets, device=3), "unknown device 3"),
        (lambda: qbayes.fit(draws="100"), "draws must be an integer, not str '100'"),
        (lambda: qbayes.fit(target_accept=2), "target_accept must be between 0.5 and 0.999"),
        (lambda: qbayes.fit_accuracy(chains=1.5), "chains must be an integer"),
        (lambda: qbayes.fit(include_suspect="no"), "include_suspect must be True or False"),
        (lambda: qbayes.validate(models=[1]), "models must be a string or a list of strings"),
        (lambda: qbayes.validate(scheme="lofo2"), "scheme must be one of 'lofo', 'forward'"),
        (lambda: qbayes.validate(reveals="1"), "reveals must be a non-empty list of integers"),
        (lambda: qbayes.validate(draws=5), "draws must be an integer of at least 10"),
        (lambda: qbayes.validate(families=["Falkon"]), "did you mean 'Falcon'"),
        (lambda: qbayes.validate_accuracy(scheme=3), "scheme must be one of"),
        (lambda: qbayes.write_report(model, out=report, draws="50"), "draws must be an integer"),
        (lambda: qbayes.write_report(model, out=report, validation=[{"models": []}]), "validation must be a path"),
        (lambda: qbayes.write_report(model, out=report, scenario="Qwen9"), "Qwen9"),
    ]
    for call, message in calls:
        with pytest.raises(qbayes.QBayesError, match=re.escape(message)):
            call()
    assert not report.exists()


def test_a_bad_candidates_column_gets_the_command_lines_message(model, tmp_path, cli):
    bad = pl.DataFrame({**CANDIDATES, "fp16_ppl": ["6.85", "five"]})
    path = tmp_path / "c.csv"
    bad.write_csv(path)
    r = cli("choose", "--candidates", path, "--budget-gib", 10, "--format", "Q4_K_M", "--output", tmp_path / "o.csv")
    assert r.code == 2 and not (tmp_path / "o.csv").exists()
    with pytest.raises(qbayes.QBayesError) as exc:
        model.choose(bad, budget_gib=10, formats=["Q4_K_M"])
    assert str(exc.value) == "candidates: column 'fp16_ppl' has values that are not Float64 in rows [2]"
    assert f"error: {exc.value}" in " ".join(r.err.split())  # the command line's message


def test_fit_accuracy_in_python_and_on_the_command_line_fit_the_same_rows(tmp_path, cli):
    from qbayes.db.store import load_paths
    from qbayes.model.accuracy import fitfile as accuracy_fitfile
    from qbayes.model.accuracy.rows import paired
    from qbayes.model.tasks import load as load_tasks

    # the two families with the fewest accuracy rows: the time is the model's compilation
    counts = paired(load_paths([]), load_tasks()).group_by("family").len().sort("len", "family")
    others = counts["family"].to_list()[2:]
    out = tmp_path / "acc.nc"
    sampling = dict(draws=100, tune=50, chains=1, seed=3)
    r = cli(
        "fit-accuracy", "--out", out, "--keep", 100, *(a for f in others for a in ("--exclude-family", f)),
        *(a for k, v in sampling.items() for a in (f"--{k}", v)),
    )  # fmt: skip
    assert r.code == 0, r.err
    from_cli = accuracy_fitfile.load(out)
    fit = qbayes.fit_accuracy(exclude_families=others, **sampling)
    assert (fit.info.n_rows, fit.info.n_configs, fit.info.data_hash, fit.info.ppl_fit.data_hash) == (
        from_cli.info.n_rows,
        from_cli.info.n_configs,
        from_cli.info.data_hash,
        from_cli.info.ppl_fit.data_hash,
    )
    assert 0 < fit.info.n_rows < counts["len"].sum()
    assert set(from_cli.posterior.data_vars) <= set(fit.posterior.data_vars)
    with pytest.raises(qbayes.QBayesError, match="no such fit file"):
        qbayes.fit_accuracy(fit=tmp_path / "none.nc")


def test_validate_accuracy_in_python_and_on_the_command_line_scores_the_same(tmp_path, cli):
    out = tmp_path / "acc.json"
    sampling = dict(draws=10, tune=10, chains=1, seed=3)
    r = cli(
        "validate", "--target", "accuracy", "--family", "Phi", "--json", out,
        *(a for k, v in sampling.items() for a in (f"--{k}", v)),
    )  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    v = qbayes.validate_accuracy(families=["Phi"], **sampling)
    assert json.loads(json.dumps(v.record.to_dict())) == doc
    assert set(v.per_family["family"]) == {"Phi"} and "overall" in set(v.per_task["task"])
    assert {"model", "n", "mdae", "cov90", "crps"} <= set(v.per_task.columns)
    assert list(v.convergence) == ["Phi"]


def test_validation_tables_keep_columns_only_late_records_have():
    from qbayes.api.validate import records_table
    from qbayes.evaluation.summary import FoldConvergence, FoldScores, Scores

    # baselines have no convergence; a Bayesian model's fold after 150 of them still shows its own
    rows = [FoldScores(f"F{i}", "cell_median", Scores(n=3, mdae=0.1)) for i in range(150)]
    rows.append(FoldScores("F0", "pooled", Scores(n=3, mdae=0.05), FoldConvergence(1.01, 2, 350.0)))
    table = records_table(rows)
    assert table.height == 151 and {"max_rhat", "divergences"} <= set(table.columns)
    assert table.row(150, named=True)["divergences"] == 2 and table["divergences"].null_count() == 150
