"""Typos of known levels refused (qbayes.model.unseen), extrapolation flagged
(qbayes.model.extrapolation), and the comparison with the best option (qbayes.model.choose)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.choose import compare_to
from qbayes.model.encoding import Encoding
from qbayes.model.extrapolation import FittedRange, outside
from qbayes.model.known_families import load as load_known
from qbayes.model.unseen import close_match, edit_distance, new_ok_values, refuse_typos

KNOWN = load_known()
ENCODING = Encoding(
    levels={
        "family": ("LLaMA-1", "OPT"),
        "method": ("AWQ", "GPTQ", "RTN"),
        "eval_set": ("c4", "wikitext2"),
        "w_kind": ("int", "kquant"),
    },
    tokens_missing=(),
    known_designs=dict(KNOWN.designs),
    known_tokens=dict(KNOWN.tokens),
)


def test_edit_distance_counts_a_swap_of_neighbours_as_one():
    assert edit_distance("gtpq", "gptq") == 1
    assert edit_distance("lama3", "llama3") == 1
    assert edit_distance("gptqv2", "gptq") == 2
    assert edit_distance("", "abc") == 3


def test_close_match_skips_versions_and_far_names():
    known = {"llama3": "Llama-3", "gptq": "GPTQ"}
    assert close_match("Lama-3", known) == "Llama-3"
    assert close_match("GTPQ", known) == "GPTQ"
    assert close_match("Llama-4", known) is None  # another version, not a typo
    assert close_match("GPTQv2", known) is None
    assert close_match("llama3", known) is None  # the same name


def _q(**cols) -> pl.DataFrame:
    base = {"family": ["OPT"], "method": ["GPTQ"], "eval_set": ["wikitext2"], "w_kind": ["int"]}
    return pl.DataFrame({**base, **{k: [v] for k, v in cols.items()}})


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("family", "Lama-3", "Llama-3"),
        ("family", "OTP", "OPT"),
        ("method", "GTPQ", "GPTQ"),
        ("eval_set", "wikitex2", "wikitext2"),
    ],
)
def test_a_typo_of_a_known_level_is_refused_unless_new_on_purpose(column, value, match):
    with pytest.raises(QBayesError, match=f"did you mean '{match}'.*--new-level"):
        refuse_typos(_q(**{column: value}), ENCODING, "q.csv", families=KNOWN)
    refuse_typos(_q(**{column: value}), ENCODING, "q.csv", True, families=KNOWN)  # said to be new


def test_new_levels_far_from_known_ones_and_known_families_pass():
    refuse_typos(_q(family="Zeta"), ENCODING, "q.csv", families=KNOWN)  # truly new
    refuse_typos(_q(family="Llama-3"), ENCODING, "q.csv", families=KNOWN)  # in the known-families table
    refuse_typos(_q(family="llama2", method="awq"), ENCODING, "q.csv", families=KNOWN)  # respelled


def test_a_task_is_refused_as_an_evaluation_set_even_when_new_on_purpose():
    with pytest.raises(QBayesError, match="'mmlu' is a task.*--task"):
        refuse_typos(_q(eval_set="mmlu"), ENCODING, "q.csv", True, families=KNOWN)
    with pytest.raises(QBayesError, match="'ARC-Challenge' is a task"):
        refuse_typos(_q(eval_set="ARC-Challenge"), ENCODING, "q.csv", families=KNOWN)


def test_new_ok_only_excuses_its_own_rows():
    q = pl.DataFrame({"family": ["Lama-3", "Lama-3"], "new_ok": ["true", ""]})
    with pytest.raises(QBayesError, match=r"rows \[2\]"):
        refuse_typos(q, ENCODING, "q.csv", new_ok_values(q, "q.csv"), families=KNOWN)


def test_new_ok_values_read_booleans_and_refuse_others():
    q = pl.DataFrame({"new_ok": ["true", "", "0", "Yes", None]})
    assert new_ok_values(q, "q").to_list() == [True, False, False, True, False]
    assert new_ok_values(pl.DataFrame({"x": [1, 2]}), "q").to_list() == [False, False]
    with pytest.raises(QBayesError, match=r"'new_ok' must be true or false.*rows \[2\]"):
        new_ok_values(pl.DataFrame({"new_ok": ["true", "maybe"]}), "q")


def test_rows_outside_the_fitted_ranges_and_kinds_are_flagged():
    fitted = FittedRange(params_b=(0.125, 180.0), train_tokens_b=(180.0, 36000.0), bits=(1.04, 8.5), kinds=frozenset())
    flags = outside(
        fitted,
        pl.Series([7.0, 1000.0, 7.0, 7.0]),
        pl.Series([2000.0, 2000.0, None, 100.0]),
        pl.Series([4.9, 4.9, 2.38, 12.0]),
        pl.Series(["Q4_K_M", None, "IQ2_XXS", None]),
    )
    assert flags["outside_params"].to_list() == [False, True, False, False]
    assert flags["outside_tokens"].to_list() == [False, False, False, True]  # unknown tokens are not flagged
    assert flags["outside_bits"].to_list() == [False, False, False, True]
    assert flags["outside_format_kind"].to_list() == [False, False, True, False]
    with_iq = FittedRange(fitted.params_b, fitted.train_tokens_b, fitted.bits, frozenset({"i-quant"}))
    assert not outside(with_iq, pl.Series([7.0]), pl.Series([1.0e3]), pl.Series([2.38]), pl.Series(["IQ2_XXS"]))[
        "outside_format_kind"
    ].any()


def test_fitted_range_reads_the_fits_rows(small_fit):
    assert "i-quant" not in FittedRange.of(small_fit).kinds
    r = FittedRange.of(small_fit)
    assert r.params_b[0] == small_fit.data["params_b"].min() and r.bits[1] == small_fit.data["bits"].max()


def test_compare_to_the_best_counts_draws_within_the_tolerance():
    # option 0 is the best; option 1 is 0.5% worse in half the draws and 5% worse in the others
    best = np.full(4, 10.0)
    draws = np.column_stack([best, [10.05, 10.5, 10.05, 10.5], [9.0, 20.0, 20.0, 20.0]])
    out = compare_to(draws, 0, 0.01)
    assert out[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out[1, 0] == 0.5 and out[1, 2] == pytest.approx(0.275)
    assert out[2, 0] == 0.25 and out[2, 2] == pytest.approx(10.0)
