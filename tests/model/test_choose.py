"""Choosing a size, bit-width and method under a memory budget (qbayes.model.choose, qbayes choose)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.choose import best_under_budget, choose, options
from qbayes.model.predict import Predictor

OPT = pl.DataFrame(
    {
        "family": ["OPT", "OPT"],
        "model": ["OPT-13B", "OPT-1.3B"],
        "params_b": [13.0, 1.3],
        "fp16_ppl": [10.13, 14.62],
        "train_tokens_b": [180.0, 180.0],
    }
)
GRID = dict(methods=("RTN", "GPTQ"), w_bits=(3.0, 4.0, 8.0), group_sizes=(128, None))
CANDIDATE_FLAGS = (
    "--family",
    "OPT",
    "--train-tokens-b",
    180,
    "--candidate",
    "OPT-13B:13:10.13",
    "--candidate",
    "OPT-1.3B:1.3:14.62",
    "--method",
    "RTN",
    "--method",
    "GPTQ",
    "--w-bits",
    3,
    "--w-bits",
    4,
    "--w-bits",
    8,
    "--group-size",
    128,
    "--group-size",
    "per-channel",
    "--draws",
    200,
)


def test_options_cross_candidates_with_the_grid_and_count_group_overhead():
    q = options(OPT, **GRID)
    assert q.height == 2 * 2 * 3 * 2
    assert q["eval_set"].unique().to_list() == ["wikitext2"]
    grouped = q.filter(pl.col("group_size").is_not_null())
    assert (grouped["bits"] > grouped["w_bits"]).all()  # the group scales cost memory
    per_channel = q.filter(pl.col("group_size").is_null())
    assert np.allclose(per_channel["bits"].to_numpy(), per_channel["w_bits"].to_numpy(), atol=0.01)


def test_best_under_budget_ranks_by_median_and_counts_winning_draws():
    memory = np.array([1.0, 2.0, 3.0, 9.0])
    median = np.array([12.0, 10.0, 11.0, 5.0])
    draws = np.array([[12.0, 10.0, 11.0, 5.0], [12.0, 10.0, 9.0, 5.0], [9.0, 10.0, 11.0, 5.0], [12, 10, 11, 5]])
    order, p = best_under_budget(memory, median, draws, 3.0)
    assert order.tolist() == [1, 2, 0]  # option 3 is over budget though best
    assert p.tolist() == [0.5, 0.25, 0.25]
    order, p = best_under_budget(memory, median, draws, 0.5)
    assert order.size == 0 and p.size == 0


def test_choose_keeps_to_the_budget_and_prefers_the_larger_model_when_it_fits(small_fit):
    tight = choose(Predictor(small_fit, n_draws=300), OPT, budget_gb=4.0, **GRID)
    within = tight.filter(pl.col("within_budget"))
    assert within.height > 0 and (within["memory_gb"] <= 4.0).all()
    assert within["rank"].to_list() == list(range(1, within.height + 1))
    assert np.all(np.diff(within["ppl_q50"].to_numpy()) >= 0)
    assert within["p_best"].sum() == pytest.approx(1.0)
    over = tight.filter(~pl.col("within_budget"))
    assert over["rank"].null_count() == over.height and (over["memory_gb"] > 4.0).all()
    assert tight.height == 2 * 2 * 3 * 2 + 2  # the quantized grid plus both models in fp16
    # OPT-1.3B in fp16 (2.6 GB) fits, and its perplexity is its fp16 perplexity, without uncertainty
    fp = tight.filter((pl.col("model") == "OPT-1.3B") & (pl.col("method") == "fp16")).row(0, named=True)
    assert fp["within_budget"] and fp["ppl_q05"] == fp["ppl_q95"] == 14.62

    roomy = choose(Predictor(small_fit, n_draws=300), OPT, budget_gb=100.0, **GRID)
    best = roomy.row(0, named=True)
    assert best["model"] == "OPT-13B" and best["w_bits"] >= 8  # all fits: the big model, barely quantized


def test_choose_cli_prints_the_ranking_and_writes_every_option(small_fit_path, arch_fit_path, tmp_path, cli):
    out = tmp_path / "options.csv"
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 4, *CANDIDATE_FLAGS, "--output", out)
    assert r.code == 0, r.err
    assert "Best options within 4 GB" in r.out and "P(best)" in r.out
    table = pl.read_csv(out)
    assert table.height == 2 * 2 * 3 * 2 + 2
    assert table.filter(pl.col("rank") == 1)["memory_gb"].item() <= 4.0
    assert "unseen by the fit" not in r.out  # the fit saw OPT, RTN, GPTQ and wikitext2

    # a family the fit never saw: its quantized options are flagged and said to be, its fp16 ones are
    # not; its design comes from the table of known families, and 'gptq' is read as the fit's GPTQ
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        16,
        "--family",
        "Qwen",
        "--candidate",
        "Qwen-7B:7:6.5",
        "--method",
        "gptq",
        "--w-bits",
        4,
        "--output",
        out,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "family unseen by the fit (Qwen)" in r.out and "read method 'gptq' as 'GPTQ'" in r.err
    table = pl.read_csv(out)
    assert table.filter(pl.col("method") == "fp16")["new_family"].to_list() == [False]
    quantized = table.filter(pl.col("method") == "gptq")
    assert quantized["new_family"].to_list() == [True] and quantized["new_arch"].to_list() == [False]
    assert quantized["new_method"].to_list() == [False]
    assert "block design" not in r.out  # the default model has no design effects
    # a model with design effects takes the family's design from the table of known families
    r = cli(
        "choose",
        "--fit",
        arch_fit_path,
        "--budget-gb",
        16,
        "--family",
        "Qwen",
        "--candidate",
        "Qwen-7B:7:6.5",
        "--method",
        "gptq",
        "--w-bits",
        4,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "block design rmsnorm+swiglu: Qwen's, from qbayes's table of known families" in r.out
    assert "training tokens" not in r.out  # Qwen's count was never disclosed: imputed, as flagged
    assert table["train_tokens_from"].null_count() == table.height

    # training tokens left out come from the table too, and the written options say so
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        16,
        "--family",
        "Llama-3",
        "--candidate",
        "Llama-3-8B:8:6.14",
        "--method",
        "GPTQ",
        "--w-bits",
        4,
        "--output",
        out,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "training tokens 15000B: Llama-3's, from qbayes's table of known families" in r.out
    table = pl.read_csv(out)
    assert table["train_tokens_b_used"].to_list() == [15000.0, 15000.0]
    assert table["train_tokens_from"].to_list() == ["known_families", "known_families"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--budget-gb", 0.05, *CANDIDATE_FLAGS), "no option fits in 0.05 GB"),
        (("--budget-gb", -1, *CANDIDATE_FLAGS), "budget must be > 0 GB"),
        (("--budget-gb", 4, "--family", "OPT", "--candidate", "OPT-13B:13"), "expected MODEL:PARAMS_B:FP16_PPL"),
        (("--budget-gb", 4, "--candidate", "OPT-13B:13:10.13"), "--candidate needs --family"),
        (
            ("--budget-gb", 4, "--family", "OPT", "--candidate", "OPT-13B:13:10.13", "--group-size", "big"),
            "--group-size 'big'",
        ),
        (("--budget-gb", 4, "--family", "OPT", "--candidate", "OPT-13B:-13:10.13"), "params_b must be > 0"),
    ],
)
def test_choose_cli_bad_input_leaves_no_output(small_fit_path, tmp_path, cli, args, message):
    out = tmp_path / "options.csv"
    r = cli("choose", "--fit", small_fit_path, *args, "--output", out)
    assert r.code == 2 and message in r.err, r.err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_choose_cli_reads_candidates_from_a_file_and_names_missing_columns(small_fit_path, tmp_path, cli):
    src = tmp_path / "candidates.csv"
    OPT.write_csv(src)
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 8, "--candidates", src, "--draws", 200)
    assert r.code == 0, r.err
    assert "OPT-13B" in r.out
    OPT.with_columns(pl.lit("GPTQ").alias("method")).write_csv(src)
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 8, "--candidates", src)
    assert r.code == 2 and "column(s) method belong to the options" in r.err
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 8, "--candidates", src, "--family", "OPT")
    assert r.code == 2 and "a --candidates file gives them as columns" in r.err
    OPT.drop("fp16_ppl").write_csv(src)
    r = cli("choose", "--fit", small_fit_path, "--budget-gb", 8, "--candidates", src)
    assert r.code == 2 and "missing column(s) fp16_ppl" in r.err
    r = cli(
        "choose",
        "--fit",
        small_fit_path,
        "--budget-gb",
        8,
        "--candidates",
        src,
        "--family",
        "OPT",
        "--candidate",
        "OPT-13B:13:10.13",
    )
    assert r.code == 2 and "not both" in r.err


def test_choose_rejects_an_empty_grid(small_fit):
    with pytest.raises(QBayesError, match="at least one method"):
        choose(Predictor(small_fit), OPT, budget_gb=8.0, methods=(), w_bits=(4.0,), group_sizes=(128,))
