"""Query values that a fit knows under another spelling (qbayes.model.respell)."""

from __future__ import annotations

import polars as pl

from qbayes.model.respell import describe, respell
from qbayes.names import key

LEVELS = {
    "family": ("LLaMA-1", "Llama-2", "OPT"),
    "method": ("AWQ", "GPTQ", "GPTQ-R", "RTN"),
    "eval_set": ("c4", "wikitext2"),
}


def test_case_and_punctuation_variants_are_read_as_the_fits_level():
    q = pl.DataFrame(
        {
            "family": ["llama2", "opt", "Llama-3"],
            "method": ["awq", "gptq-r", "round-to-nearest"],
            "eval_set": ["WikiText-2", "wikitext-2-raw-v1", "C4"],
        }
    )
    out, changes = respell(q, LEVELS)
    assert out["family"].to_list() == ["Llama-2", "OPT", "Llama-3"]  # Llama-3 is new and stays so
    assert out["method"].to_list() == ["AWQ", "GPTQ-R", "RTN"]
    assert out["eval_set"].to_list() == ["wikitext2", "wikitext2", "c4"]
    assert ("method", "awq", "AWQ") in changes and ("eval_set", "wikitext-2-raw-v1", "wikitext2") in changes
    assert len(changes) == 8  # 2 families, 3 methods, 3 evaluation sets
    assert describe([("method", "awq", "AWQ")]) == ["read method 'awq' as 'AWQ', the fit's spelling"]


def test_known_values_and_ambiguous_ones_are_left_alone():
    levels = {"method": ("AWQ", "A.W.Q.", "GPTQ")}
    q = pl.DataFrame({"method": ["awq", "GPTQ", "GPTQv2", None]})
    out, changes = respell(q, levels)
    assert out["method"].to_list() == ["awq", "GPTQ", "GPTQv2", None]  # "awq" matches two levels
    assert changes == []
    assert key("Llama-3.1 8B") == "llama318b"
