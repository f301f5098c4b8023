"""Task accuracy given the degradation: the table of tasks, the training rows, a small real
fit (one session fixture), prediction, and predict/choose/validate on the command line."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.db import store
from qbayes.errors import QBayesError
from qbayes.evaluation import accuracy as acc_cv
from qbayes.evaluation.crossval import QGRID
from qbayes.model import fitfile
from qbayes.model.accuracy import fitfile as acc_fitfile
from qbayes.model.accuracy import rows as acc_rows
from qbayes.model.accuracy.fit import AccuracyFitOptions, fit_rows
from qbayes.model.accuracy.predict import AccuracyPredictor, check_queries
from qbayes.model.predict import Predictor
from qbayes.model.samplers import SampleConfig
from qbayes.model.tasks import load as load_tasks
from qbayes.resources import shipped_accuracy_fit, shipped_fit

from helpers import SHIPPED_DB

LLAMA3_8B = ("--family", "Llama-3", "--params-b", "8", "--format", "Q4_K_M", "--fp16-ppl", "6.14")


@pytest.fixture(scope="module")
def ppl_fit():
    return fitfile.load(shipped_fit())


@pytest.fixture(scope="module")
def data(ppl_fit):
    return acc_rows.build(store.load(SHIPPED_DB), load_tasks(), Predictor(ppl_fit, n_draws=400))


@pytest.fixture(scope="module")
def small_accuracy_fit(data, ppl_fit, tmp_path_factory):
    """The accuracy model fitted to LLaMA-1 and Mistral rows with short chains, saved and loaded."""
    sub = acc_cv.subset(data, ["LLaMA-1", "Mistral"])
    opts = AccuracyFitOptions(sample=SampleConfig(draws=150, tune=150, chains=2, seed=3, progress=False, extensions=0))
    fit = fit_rows(sub, load_tasks(), ppl_fit, "data/default-fit.nc", opts)
    path = acc_fitfile.save(fit, tmp_path_factory.mktemp("accfit") / "acc.nc")
    return acc_fitfile.load(path)


# --- the table of tasks and the training rows ----------------------------------------


def test_tasks_table_has_chance_and_size_and_refuses_unknown_names():
    tasks = load_tasks()
    assert tasks.get("piqa").chance == 50 and tasks.get("mmlu").chance == 25
    assert tasks.get("lambada_openai").chance == 0 and tasks.get("hellaswag").n_items > 10_000
    # binomial se of 50% on 1,838 questions: 100 * sqrt(.25 / 1838)
    assert tasks.get("piqa").binomial_se(50) == pytest.approx(1.1663, abs=1e-3)
    with pytest.raises(QBayesError, match="unknown task 'hellaswg' \\(did you mean 'hellaswag'\\?\\)"):
        tasks.get("hellaswg")
    with pytest.raises(QBayesError, match="unknown task 'avg11'"):
        tasks.get("avg11")


def test_rows_pair_baselines_and_take_measured_delta_where_printed(data):
    rows, configs = data.rows, data.configs
    assert set(rows["task"]) <= set(load_tasks().names) and "avg11" not in set(rows["task"])
    assert (rows["fp16_acc"] > rows["chance"]).all()
    assert configs["config"].to_list() == list(range(configs.height))
    # the "Other data" tables print both perplexities: their Δ is measured, its prior narrow
    measured = configs.filter(pl.col("delta_measured").is_not_null())
    assert measured.height > 0 and set(measured["source_table"]) == {"Other data W2G32", "Other data W4G128"}
    expected = np.log(np.maximum(measured["delta_measured"].to_numpy(), 0) + data.shift)
    assert np.allclose(measured["log_delta_loc"].to_numpy(), expected)
    assert set(measured["delta_from"]) == {"printed"}
    # a configuration another study measured takes its Δ: GPTQ's and AWQ's tables print
    # Llama-2-7B RTN w3 g128 at 6.66 and 6.7 against 5.47 (WikiText-2)
    rtn3 = configs.filter(
        (pl.col("model") == "Llama-2-7B") & (pl.col("method") == "RTN") & (pl.col("dtype_label") == "int3-g128")
    ).row(0, named=True)
    assert rtn3["delta_from"] == "database"
    assert np.exp(rtn3["log_delta_loc"]) - data.shift == pytest.approx(np.log(6.68 / 5.47), abs=0.03)
    # elsewhere the perplexity model's predictive: 2-bit configurations degrade more than 4-bit ones
    pred = configs.filter(pl.col("delta_from") == "model")
    loc2 = pred.filter(pl.col("w_bits") == 2)["log_delta_loc"].median()
    loc4 = pred.filter(pl.col("w_bits") == 4)["log_delta_loc"].median()
    assert loc2 > loc4 + 1.0


def test_subset_renumbers_configurations(data):
    sub = acc_cv.subset(data, ["Mistral"])
    assert set(sub.rows["family"]) == {"Mistral"}
    assert sorted(set(sub.rows["config"])) == list(range(sub.configs.height))
    assert set(sub.configs["family"]) == {"Mistral"}


# --- the fit and its predictions -----------------------------------------------------


def test_fit_file_round_trips_and_records_the_perplexity_fit(small_accuracy_fit, ppl_fit, tmp_path):
    fit = small_accuracy_fit
    assert fit.info.ppl_fit.data_hash == ppl_fit.info.data_hash
    assert acc_fitfile.other_perplexity_fit(fit, ppl_fit.info.data_hash) is None
    note = acc_fitfile.other_perplexity_fit(fit, "0123456789abcdef")
    assert note is not None and ppl_fit.info.data_hash in note and "0123456789abcdef" in note
    assert set(fit.rows["family"]) == {"LLaMA-1", "Mistral"} and fit.info.n_rows == fit.rows.height
    assert "mmlu" in fit.info.tasks and "k" in fit.posterior
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not netcdf")
    with pytest.raises(QBayesError, match="not a qbayes accuracy fit"):
        acc_fitfile.load(bad)
    with pytest.raises(QBayesError, match="not a qbayes accuracy fit"):
        acc_fitfile.load(shipped_fit())  # a perplexity fit is not an accuracy fit


def test_accuracy_falls_with_delta_and_tracks_held_in_rows(small_accuracy_fit):
    acc = AccuracyPredictor(small_accuracy_fit, n_draws=400)
    delta = np.array([[0.0], [0.05], [0.3], [3.0]]) * np.ones((1, 400))
    med = np.median(acc.acc_draws(delta, ["mmlu"] * 4, np.full(4, 60.0)), axis=1)
    assert np.all(np.diff(med) < 0), med
    assert abs(med[0] - 60) < 1.0 and med[-1] < 35  # a collapse falls to near chance (25)
    # the training rows' own medians, from their fitted Δ, are close to what was measured
    post = small_accuracy_fit.posterior
    log_delta = post["log_delta"].stack(s=("chain", "draw")).values  # (C, S)
    rows = small_accuracy_fit.rows
    d = np.exp(log_delta[rows["config"].to_numpy()]) - small_accuracy_fit.info.shift
    exp = np.median(acc.expected(d, rows["task"].to_list(), rows["fp16_acc"].to_numpy()), axis=1)
    assert np.median(np.abs(exp - rows["acc"].to_numpy())) < 1.5


def test_check_queries_names_every_bad_row():
    df = pl.DataFrame({"task": ["mmlu", "mmluu", "piqa", "mmlu"], "fp16_acc": [65.0, 60.0, 45.0, 120.0]})
    with pytest.raises(QBayesError) as exc:
        check_queries(df, load_tasks())
    msg = str(exc.value)
    assert "row 2: unknown task 'mmluu' (did you mean 'mmlu'?)" in msg
    assert "row 3: fp16_acc 45 is at or below piqa's chance level 50%" in msg
    assert "row 4: fp16_acc 120 is outside 0-100" in msg
    check_queries(df.head(1), load_tasks())  # a good row passes


# --- the shipped fit and the command line ---------------------------------------------


def test_shipped_accuracy_fit_was_built_on_the_shipped_perplexity_fit(ppl_fit):
    """Fails when the shipped perplexity posterior is regenerated without rerunning
    `qbayes fit-accuracy --out data/accuracy-fit.nc`."""
    fit = acc_fitfile.load(shipped_accuracy_fit())
    assert fit.info.ppl_fit.data_hash == ppl_fit.info.data_hash
    assert fit.info.ppl_fit.posterior_checksum == ppl_fit.posterior_checksum
    assert fit.info.convergence.divergences <= 5


def test_predict_answers_the_mmlu_question_without_a_fit(cli):
    r = cli("predict", *LLAMA3_8B, "--task", "mmlu", "--fp16-acc", "65")
    assert r.code == 0, r.err
    assert "mmlu accuracy %" in r.out and "fp16 accuracy on mmlu 65%" in r.out
    assert "accuracy fit:" in r.err


def test_predict_file_adds_accuracy_columns(cli, tmp_path):
    q = tmp_path / "q.csv"
    pl.DataFrame(
        {
            "family": ["Llama-2"] * 3,
            "model": ["Llama-2-7B"] * 3,
            "params_b": [7.0] * 3,
            "method": ["RTN"] * 3,
            "w_bits": [4.0, 2.0, 4.0],
            "group_size": [128] * 3,
            "eval_set": ["wikitext2"] * 3,
            "fp16_ppl": [5.47] * 3,
            "task": ["arc_easy", "arc_easy", None],
            "fp16_acc": [76.3, 76.3, None],
        }
    ).write_csv(q)
    out = tmp_path / "p.csv"
    r = cli("predict", "--input", q, "--output", out)
    assert r.code == 0, r.err
    p = pl.read_csv(out)
    for c in ("acc_q05", "acc_q25", "acc_q50", "acc_q75", "acc_q95", "acc_mean"):
        assert c in p.columns
    assert p["acc_q50"][0] > p["acc_q50"][1] and p["acc_q50"][2] is None
    assert (p["acc_q05"][:2] <= p["acc_q50"][:2]).all() and (p["acc_q50"][:2] <= p["acc_q95"][:2]).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--task", "mmlu_x", "--fp16-acc", "60"), "unknown task 'mmlu_x' (did you mean 'mmlu'?)"),
        (("--task", "mmlu", "--fp16-acc", "20"), "fp16_acc 20 is at or below mmlu's chance level 25%"),
        (("--task", "mmlu", "--fp16-acc", "101"), "fp16_acc 101 is outside 0-100"),
        (("--task", "mmlu"), "--task and --fp16-acc go together"),
    ],
)
def test_predict_refuses_bad_accuracy_queries(cli, args, message):
    r = cli("predict", *LLAMA3_8B, *args)
    assert r.code == 2 and message in r.err, r.err


def test_predict_file_refusal_writes_nothing(cli, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text(
        "family,model,params_b,format,fp16_ppl,eval_set,task,fp16_acc\nLlama-3,L8,8,Q4_K_M,6.14,wikitext2,piqa,48\n"
    )
    out = tmp_path / "p.csv"
    r = cli("predict", "--input", q, "--output", out)
    assert r.code == 2 and "row 1: fp16_acc 48 is at or below piqa's chance level 50%" in r.err
    assert not out.exists()


def test_choose_ranks_by_accuracy_with_p_best(cli, tmp_path):
    out = tmp_path / "options.csv"
    r = cli(
        "choose",
        "--candidate",
        "Llama-3-8B:8:6.14",
        "--family",
        "Llama-3",
        "--budget-gb",
        "6",
        "--format",
        "Q4_K_M",
        "--format",
        "Q2_K",
        "--format",
        "Q8_0",
        "--task",
        "mmlu",
        "--fp16-acc",
        "65.3",
        "--output",
        out,
    )
    assert r.code == 0, r.err
    assert "by accuracy on mmlu" in r.out
    t = pl.read_csv(out).filter(pl.col("within_budget"))
    assert t["acc_rank"].to_list() == list(range(1, t.height + 1))
    assert t["acc_q50"].is_sorted(descending=True)
    assert t["acc_p_best"].sum() == pytest.approx(1.0)
    q2 = t.filter(pl.col("format") == "Q2_K")["acc_q50"][0]
    q4 = t.filter(pl.col("format") == "Q4_K_M")["acc_q50"][0]
    assert q4 > q2


def test_choose_refuses_one_fp16_acc_for_several_candidates(cli):
    r = cli(
        "choose",
        *("--candidate", "A:7:6", "--candidate", "B:13:5.5", "--family", "Llama-2", "--budget-gb", "8"),
        *("--format", "Q4_K_M", "--task", "mmlu", "--fp16-acc", "50"),
    )
    assert r.code == 2 and "with several candidate models give a --candidates file" in r.err


# --- validation baselines ----------------------------------------------------------------


def test_cell_median_and_linear_baselines():
    train = pl.DataFrame(
        {
            "task": ["piqa"] * 6,
            "method": ["RTN"] * 3 + ["GPTQ"] * 3,
            "w_bits": [4.0] * 6,
            "group_size": [128] * 6,
            "drop": [-1.0, -2.0, -3.0, -0.5, -0.5, -0.5],
            "delta_median": [0.1, 0.2, 0.3, 0.05, 0.05, 0.05],
        }
    )
    test = pl.DataFrame(
        {
            "task": ["piqa", "piqa"],
            "method": ["RTN", "AWQ"],
            "w_bits": [4.0, 4.0],
            "group_size": [128, 128],
            "fp16_acc": [80.0, 70.0],
            "delta_median": [0.2, 0.4],
        }
    )
    q = acc_cv.cell_median(train, test)
    median = q[np.argmin(np.abs(QGRID - 0.5))]
    # RTN's own cell; AWQ has none, so the (task, bits) cell of all six
    assert median[0] == pytest.approx(78.0) and median[1] == pytest.approx(70 + np.median(train["drop"]))
    from scipy.stats import norm

    lin = acc_cv.linear_delta(train, test, norm.ppf(QGRID))
    assert lin[np.argmin(np.abs(QGRID - 0.5)), 1] < lin[np.argmin(np.abs(QGRID - 0.5)), 0]
    assert np.all(acc_cv.no_change(test)[:, 0] == 80.0)


def test_validate_accuracy_refuses_an_unknown_family_before_fitting(cli):
    r = cli("validate", "--target", "accuracy", "--family", "Llama-9")
    assert r.code == 2 and "unknown family 'Llama-9'" in r.err, r.err
    assert "Qwen2" in r.err  # the accuracy rows' families are the ones offered
