"""Query values that a fit knows under another spelling.

A query's family, method, evaluation set and format kind are matched to the fit's levels
exactly. A value that is not a level but equals exactly one level once case, spaces and
punctuation are ignored ("awq" and "AWQ", "WikiText-2" and "wikitext2", "llama2" and
"Llama-2") is read as that level, and so are a few other names of the same thing
(``ALIASES``: "wikitext-2-raw-v1" is the Hugging Face configuration of WikiText-2). Anything
else stays as it is: a level the fit has not seen, predicted from the population and flagged.
Without this a query spelled "gptq" would be predicted as a new method, with intervals wide
enough to hide the mistake.
"""

from __future__ import annotations

import polars as pl

from qbayes.names import key

COLUMNS = ("family", "method", "eval_set", "w_kind")
# other names, by key, of levels the shipped data use
ALIASES = {
    "eval_set": {"wikitext": "wikitext2", "wikitext2rawv1": "wikitext2", "wikitext2v1": "wikitext2"},
    "method": {"roundtonearest": "RTN"},
}


def respell(df: pl.DataFrame, levels: dict[str, tuple[str, ...]]) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """``df`` with each value of :data:`COLUMNS` that the fit knows under another spelling
    replaced by the fit's, and the replacements as (column, value, level)."""
    changes = []
    for col in COLUMNS:
        known = levels.get(col, ())
        if col not in df.columns or not known:
            continue
        by_key: dict[str, list[str]] = {}
        for level in known:
            by_key.setdefault(key(level), []).append(level)
        mapping = {}
        for value in df.get_column(col).drop_nulls().unique().to_list():
            if value in known:
                continue
            same = by_key.get(key(value), [])
            alias = ALIASES.get(col, {}).get(key(value))
            if len(same) == 1:
                mapping[value] = same[0]
            elif not same and alias in known:
                mapping[value] = alias
        if mapping:
            df = df.with_columns(pl.col(col).replace(mapping))
            changes += [(col, value, level) for value, level in sorted(mapping.items())]
    return df, changes


def describe(changes: list[tuple[str, str, str]]) -> list[str]:
    """One line per replacement made by :func:`respell`, for the command line."""
    return [f"read {col} '{value}' as '{level}', the fit's spelling" for col, value, level in changes]
