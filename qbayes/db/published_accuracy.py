"""Import published task accuracies (``published_accuracy.csv``) into the ``accuracy`` table.

Read like the perplexity tables (:mod:`qbayes.db.published`): type inference off, every
column cast explicitly, an unparseable cell reported by CSV line and column. Mapping
decisions, documented in ``data/README.md``:

* ``method == "fp16"`` becomes ``method = "none"``, ``w_kind = "float"``, ``dtype_label``
  ``fp16`` (``bf16`` where the note says the baseline was BF16);
* a method printed with its settings, ``AutoRound[iters=1K,...]``, is method ``AutoRound``
  with the settings kept in ``dtype_label`` (``int2-g32 [iters=1K,...]``), so the variants
  stay distinct rows of one method;
* quantized rows are integer weights: ``dtype_label`` ``int{bits}`` with ``-g{group}``
  where grouped, ``w_bits_eff`` as for the perplexity rows;
* ``doubt``: ``caution`` where the note says the group size or shots were not printed.

Every quantized row needs an unquantized row of the same model, task, shots, metric,
source and table (checked by :func:`qbayes.db.validate.check_accuracy_baselines`).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from qbayes.db.database import Database
from qbayes.db.published import _cast, _read_csv, _source_kind, _w_bits_eff
from qbayes.db.schema import ACCURACY, BASELINE_METHOD
from qbayes.db.store import InvalidDatabase
from qbayes.db.validate import Problem

ACCURACY_COLUMNS = (
    "family",
    "model",
    "params_b",
    "method",
    "w_bits",
    "group_size",
    "act_bits",
    "task",
    "shots",
    "metric",
    "value",
    "wikitext2_ppl",
    "source",
    "source_table",
    "note",
)
CAUTION_PATTERNS = ("group size not printed",)
_VARIANT = re.compile(r"^([^\[]+)\[(.+)\]$")  # "AutoRound[iters=1K]" -> ("AutoRound", "iters=1K")


def _method_and_label(method: str, bits: float, group: int | None, note: str | None) -> tuple[str, str, str]:
    """(method, w_kind, dtype_label) of one CSV row."""
    if method == "fp16":
        bf16 = note is not None and note.upper().startswith("BF16")
        return BASELINE_METHOD, "float", "bf16" if bf16 else "fp16"
    label = f"int{bits:g}" + (f"-g{group}" if group is not None else "")
    m = _VARIANT.match(method)
    if m:
        return m.group(1), "int", f"{label} [{m.group(2)}]"
    return method, "int", label


def _doubt(note: str | None) -> str | None:
    return "caution" if note is not None and any(p in note.lower() for p in CAUTION_PATTERNS) else None


def import_accuracy(csv: str | Path, models: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``csv`` as an ``accuracy`` table (schema order and dtypes). ``models``
    is the models table the rows must refer to, with the same family. Raises
    :class:`InvalidDatabase` listing every problem; the database's own checks (keys,
    ranges, baselines) run when the caller validates the whole database."""
    path = Path(csv)
    df = _read_csv(path, ACCURACY_COLUMNS)
    df, problems = _cast(
        df,
        path,
        {
            "params_b": pl.Float64,
            "w_bits": pl.Float64,
            "group_size": pl.Int64,
            "act_bits": pl.Float64,
            "shots": pl.Int64,
            "value": pl.Float64,
            "wikitext2_ppl": pl.Float64,
        },
    )
    known = dict(models.select("model", "family").iter_rows())
    for i, r in enumerate(df.iter_rows(named=True)):
        if r["model"] not in known:
            problems.append(Problem(str(path), f"model '{r['model']}' is not in the models table", i + 2, "model"))
        elif known[r["model"]] != r["family"]:
            problems.append(
                Problem(
                    str(path),
                    f"model '{r['model']}' has family '{r['family']}' but '{known[r['model']]}' in the models table",
                    i + 2,
                    "family",
                )
            )
    if problems:
        raise InvalidDatabase(problems)
    rows = []
    for r in df.iter_rows(named=True):
        method, kind, label = _method_and_label(r["method"], r["w_bits"], r["group_size"], r["note"])
        rows.append(
            {
                "model": r["model"],
                "method": method,
                "w_kind": kind,
                "w_bits": r["w_bits"],
                "group_size": r["group_size"],
                "w_bits_eff": _w_bits_eff(kind, method, label, r["w_bits"], r["group_size"]),
                "dtype_label": label,
                "act_bits": r["act_bits"],
                "task": r["task"],
                "shots": r["shots"],
                "metric": r["metric"],
                "acc": r["value"],
                "wikitext2_ppl": r["wikitext2_ppl"],
                "source_kind": _source_kind(r["source"]),
                "source": r["source"],
                "source_table": r["source_table"],
                "note": r["note"],
                "doubt": _doubt(r["note"]),
            }
        )
    if not rows:
        return ACCURACY.empty()
    return pl.DataFrame(rows, schema={c: ACCURACY.polars_schema[c] for c in rows[0]})


def with_accuracy(db: Database, csv: str | Path) -> Database:
    """``db`` (from :func:`qbayes.db.published.import_published`) with the accuracy rows of
    ``csv`` added, validated as a whole (raises :class:`InvalidDatabase`)."""
    out = Database(
        models=db.models,
        results=db.results,
        accuracy=import_accuracy(csv, db.models),
        features=db.features,
        failures=db.failures,
    ).conform()
    problems = out.problems(str(Path(csv).parent))
    if problems:
        raise InvalidDatabase(problems)
    return out
