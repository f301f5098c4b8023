"""Levels a fit has not seen that look like typos, refused before they become predictions.

A family, method, evaluation set or weight kind the fit has not seen is predicted from the
population of its grouping, with wider intervals, and flagged. That is right for a family
that is new on purpose and wrong for "Lama-3" or "GTPQ": a misspelt family loses its
known training tokens and design and comes out with an interval that looks honest. So a
value that is not a level of the fit (after :mod:`qbayes.model.respell`), nor a family of
the table of known families, and that is one edit (insertion, deletion, substitution or
swap of neighbours, case and punctuation ignored) from one of them, is refused with the
close match, unless the row says it is new on purpose (``--new-level``, a ``new_ok``
column in files). Two names that differ only in their digits ("Llama-4" and "Llama-3") are
versions, not typos.

An evaluation set that is a task of lm-evaluation-harness (mmlu, arc_challenge, ...) is
always refused: qbayes predicts perplexity on a text corpus, and task accuracy is asked
for with ``--task``.
"""

from __future__ import annotations

import re

import polars as pl

from qbayes.errors import QBayesError
from qbayes.model.encoding import Encoding
from qbayes.model.known_families import KnownFamilies
from qbayes.model.queries import NEW_OK
from qbayes.model.respell import respell
from qbayes.names import key

CHECKED = {"family": "family", "method": "method", "eval_set": "evaluation set", "w_kind": "weight kind"}
# lm-evaluation-harness tasks people name where an evaluation corpus is meant, by key
TASKS = frozenset(
    key(t)
    for t in (
        "mmlu",
        "mmlu_pro",
        "arc_challenge",
        "arc_easy",
        "arc",
        "hellaswag",
        "winogrande",
        "piqa",
        "boolq",
        "gsm8k",
        "truthfulqa",
        "truthfulqa_mc1",
        "truthfulqa_mc2",
        "openbookqa",
        "sciq",
        "siqa",
        "social_iqa",
        "race",
        "copa",
        "rte",
        "mathqa",
        "bbh",
        "ifeval",
        "gpqa",
        "humaneval",
        "mbpp",
        "triviaqa",
        "nq_open",
        "drop",
        "math",
        "commonsense_qa",
        "logiqa",
        "anli",
    )
)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps
    of neighbouring characters, each costing one ("GTPQ" is one edit from "GPTQ")."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def close_match(value: str, known: dict[str, str]) -> str | None:
    """The known name (``known``: key -> name as spelled) one edit from ``value``'s key,
    or None; names that differ only in digits are versions, not typos."""
    k = key(value)
    if not k or k in known:
        return None
    letters = re.sub(r"[0-9]", "#", k)
    for other, name in sorted(known.items()):
        if edit_distance(k, other) <= 1 and re.sub(r"[0-9]", "#", other) != letters:
            return name
    return None


def known_names(column: str, encoding: Encoding, families: KnownFamilies | None = None) -> dict[str, str]:
    """key -> spelling of every value of ``column`` the fit knows: its levels, and for
    families also the table of known families that the fit stored (``families`` gives
    their names as spelled; without it a family of the table is shown by its key)."""
    names = {key(level): level for level in encoding.levels.get(column, ())}
    if column == "family":
        spelled = families.families if families is not None else {}
        for k in set(encoding.known_designs) | set(encoding.known_tokens):
            names.setdefault(k, spelled.get(k, k))
    return names


def new_ok_values(df: pl.DataFrame, where: str) -> pl.Series:
    """The ``new_ok`` column of a query file as booleans (false where absent or empty);
    refuses values that are not true/false, 1/0 or yes/no."""
    if NEW_OK not in df.columns:
        return pl.Series(NEW_OK, [False] * df.height, dtype=pl.Boolean)
    s = df.get_column(NEW_OK)
    if s.dtype == pl.Boolean:
        return s.fill_null(False)
    text = s.cast(pl.String).str.strip_chars().str.to_lowercase().fill_null("")
    bad = ~text.is_in(list(_TRUE | _FALSE))
    if bad.any():
        rows = (bad.arg_true() + 1).head(5).to_list()
        raise QBayesError(f"{where}: column '{NEW_OK}' must be true or false (empty: false); rows {rows}")
    return text.is_in(list(_TRUE)).alias(NEW_OK)


def refuse_typos(
    df: pl.DataFrame,
    encoding: Encoding,
    where: str,
    new_ok: pl.Series | bool = False,
    families: KnownFamilies | None = None,
) -> None:
    """Raise :class:`QBayesError` naming every value of ``df``'s family, method,
    evaluation-set and weight-kind columns (those it has) that looks like a typo of a
    level the fit knows, on rows not marked ``new_ok``, and every evaluation set that is
    a task name (on any row)."""
    ok = pl.Series([new_ok] * df.height, dtype=pl.Boolean) if isinstance(new_ok, bool) else new_ok
    spelled, _ = respell(df, encoding.levels)
    problems = []
    if "eval_set" in spelled.columns:
        values = spelled.get_column("eval_set").cast(pl.String)
        for value in values.drop_nulls().unique(maintain_order=True).to_list():
            if key(value) in TASKS:
                rows = ((values == value).arg_true() + 1).head(5).to_list()
                problems.append(
                    f"evaluation set '{value}' is a task, not a text corpus (rows {rows}): qbayes predicts "
                    "perplexity on a corpus (wikitext2, c4, ptb); ask for task accuracy with --task "
                    "(a 'task' column in files)"
                )
    for column, what in CHECKED.items():
        if column not in spelled.columns:
            continue
        known = known_names(column, encoding, families)
        values = spelled.get_column(column).cast(pl.String)
        for value in values.filter(~ok).drop_nulls().unique(maintain_order=True).to_list():
            if column == "eval_set" and key(value) in TASKS:
                continue
            match = close_match(value, known)
            if match is not None:
                rows = ((values == value) & ~ok).arg_true() + 1
                problems.append(
                    f"{what} '{value}' is not one the fit knows; did you mean '{match}'? (rows "
                    f"{rows.head(5).to_list()}) If '{value}' is new on purpose, say so with --new-level "
                    f"(a '{NEW_OK}' column set to true in files)"
                )
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
