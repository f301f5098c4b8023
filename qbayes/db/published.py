"""Import published tables (``published_ptq.csv`` + ``model_meta.csv``) into a database.

The CSV is read with type inference off (arXiv ids like ``2210.17323`` would otherwise
become floats) and every column is cast explicitly; a cell that does not parse is
reported with its CSV line and column.  Mapping decisions, all documented in
``data/README.md``:

* ``method == "fp16"`` (the baseline) becomes ``method = "none"``, ``w_kind = "float"``;
* ``w_kind`` comes from the label: ``avg-*`` and fractional-bit labels -> ``mixed``,
  llama.cpp k-quants -> ``kquant``, everything else -> ``int``;
* ``w_bits_eff`` (bits per weight with scale/zero overhead) where the format tells it:
  grouped integers carry one fp16 scale and one b-bit zero per group, b + (16+b)/g;
  llama.cpp types (k-quant mixes, legacy blocks) from the table of format names
  (``data/formats.csv``, :mod:`qbayes.db.named_formats`), the same bits per weight a query
  naming the type is predicted with; average-bit methods as printed;
* ``doubt``: notes saying columns look swapped or values are non-monotonic -> ``suspect``;
  notes warning of extraction/layout problems -> ``caution``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl

from qbayes.db import named_formats
from qbayes.db.database import Database
from qbayes.db.schema import BASELINE_METHOD, RESULTS
from qbayes.db.store import InvalidDatabase
from qbayes.db.validate import Problem
from qbayes.errors import QBayesError
from qbayes.names import key, key_expr
from qbayes.resources import known_families_csv, read_table

PTQ_COLUMNS = (
    "family",
    "model",
    "params_b",
    "method",
    "w_bits",
    "group_size",
    "dtype_label",
    "act_bits",
    "eval_set",
    "seq_len",
    "metric",
    "value",
    "source_arxiv_id",
    "source_table",
    "note",
)
META_COLUMNS = (
    "family",
    "model",
    "params_b",
    "train_tokens_b",
    "year",
    "position_encoding",
    "norm",
    "mlp",
    "source",
)
RELEASE_COLUMNS = ("model", "released", "source")  # release_dates.csv: first public release per model
LLAMA_CPP = ("llama.cpp-kquant", "llama.cpp-legacy")  # methods whose labels are GGUF types (named_formats)
SUSPECT_PATTERNS = ("look swapped", "non-monotonic")
CAUTION_PATTERNS = ("layout problems", "header missing", "garbled")


def _read_csv(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema=False, null_values=[""])
    except Exception as exc:
        raise QBayesError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise QBayesError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def _cast(df: pl.DataFrame, path: Path, casts: dict[str, pl.DataType]) -> tuple[pl.DataFrame, list[Problem]]:
    """Cast string columns, reporting each unparseable cell by CSV line (header = line 1)."""
    problems = []
    out = df
    for name, dtype in casts.items():
        col = df.get_column(name)
        cast = col.str.to_date("%Y-%m-%d", strict=False) if dtype == pl.Date else col.cast(dtype, strict=False)
        bad = df.get_column(name).is_not_null() & cast.is_null()
        for i in bad.arg_true().head(20).to_list():
            problems.append(Problem(str(path), f"'{df[i, name]}' is not a valid {dtype}", row=i + 2, column=name))
        out = out.with_columns(cast.alias(name))
    return out, problems


def _w_kind(method: str, label: str, bits: float) -> str:
    if method == "fp16":
        return "float"
    if method == "llama.cpp-kquant":
        return "kquant"
    if label.startswith("avg-") or bits != math.floor(bits):
        return "mixed"
    return "int"


def _w_bits_eff(kind: str, method: str, label: str, bits: float, group: int | None) -> float | None:
    if kind in ("float", "mixed"):
        return bits
    if method in LLAMA_CPP:
        return _gguf_type(label, method, bits, group).bits_per_weight
    if group is not None:
        return bits + (16 + bits) / group
    return bits


def _gguf_type(label: str, method: str, bits: float, group: int | None) -> named_formats.NamedFormat:
    """The llama.cpp type a row's label names; raises QBayesError when the table lacks it
    or says otherwise about its method, bits or group size."""
    f = named_formats.load().by_key.get(key(label))
    if f is None:
        raise QBayesError(f"'{label}' is not a llama.cpp type of data/formats.csv")
    if (f.method, f.w_bits, f.group_size) != (method, bits, group):
        raise QBayesError(
            f"'{label}' is {f.method} w{f.w_bits:g} g{f.group_size} in data/formats.csv, "
            f"but the row says {method} w{bits:g} g{group}"
        )
    return f


def _doubt(note: str | None) -> str | None:
    if note is None:
        return None
    low = note.lower()
    if any(p in low for p in SUSPECT_PATTERNS):
        return "suspect"
    if any(p in low for p in CAUTION_PATTERNS):
        return "caution"
    return None


def _source_kind(source: str) -> str:
    return "paper" if re.fullmatch(r"\d{4}\.\d{4,5}(v\d+)?", source) else "repository"


def _release_dates(path: Path, models: pl.Series) -> tuple[pl.DataFrame, list[Problem]]:
    """model -> (released, released_source) from a release-dates CSV; a date that does not
    parse, a model listed twice, or one the models table does not have is a problem."""
    df = _read_csv(path, RELEASE_COLUMNS)
    df, problems = _cast(df, path, {"released": pl.Date})
    for i in df.with_row_index("i").filter(pl.col("model").is_duplicated())["i"].to_list():
        problems.append(
            Problem(str(path), f"model '{df[i, 'model']}' is listed more than once", row=i + 2, column="model")
        )
    for i in df.with_row_index("i").filter(~pl.col("model").is_in(models.implode()))["i"].to_list():
        problems.append(
            Problem(str(path), f"model '{df[i, 'model']}' is not in the models table", row=i + 2, column="model")
        )
    return df.select("model", "released", pl.col("source").alias("released_source")), problems


def family_vocab(families: pl.Series) -> pl.DataFrame:
    """Per family of ``families``: ``vocab_size`` and ``vocab_source`` from the shipped table of
    known families (data/known_families.csv, matched by family name or alias, case and
    punctuation ignored), null for a family it does not list. The published model table does
    not print vocabulary sizes; a family's models share one tokenizer."""
    known = (
        read_table(known_families_csv(), ("family", "aliases", "vocab_size", "vocab_source"), what="known families")
        .with_columns(pl.concat_list(pl.col("family"), pl.col("aliases").fill_null("").str.split(";")).alias("name"))
        .explode("name")
        .filter(pl.col("name").str.strip_chars() != "")
        .select(
            key_expr(pl.col("name").str.strip_chars()).alias("key"),
            pl.col("vocab_size").cast(pl.Int64, strict=False),
            "vocab_source",
        )
        .unique("key", keep="first")
    )
    wanted = pl.DataFrame({"family": families.unique(maintain_order=True)})
    return wanted.with_columns(key_expr(pl.col("family")).alias("key")).join(known, on="key", how="left").drop("key")


def import_published(ptq_csv: str | Path, meta_csv: str | Path, released_csv: str | Path | None = None) -> Database:
    """Read the CSVs and return a validated :class:`Database` (raises on any problem).
    ``released_csv`` (model, released, source) gives each model's release date; models it
    does not list have none."""
    ptq_path, meta_path = Path(ptq_csv), Path(meta_csv)
    ptq = _read_csv(ptq_path, PTQ_COLUMNS)
    meta = _read_csv(meta_path, META_COLUMNS)

    ptq, problems = _cast(
        ptq,
        ptq_path,
        {
            "params_b": pl.Float64,
            "w_bits": pl.Float64,
            "group_size": pl.Int64,
            "act_bits": pl.Float64,
            "seq_len": pl.Int64,
            "value": pl.Float64,
        },
    )
    meta, meta_problems = _cast(
        meta,
        meta_path,
        {
            "params_b": pl.Float64,
            "train_tokens_b": pl.Float64,
            "year": pl.Int64,
        },
    )
    problems += meta_problems
    if released_csv is not None:
        released, release_problems = _release_dates(Path(released_csv), meta.get_column("model"))
        problems += release_problems
        meta = meta.join(released, on="model", how="left", maintain_order="left")
    bad_metric = ptq.with_row_index("i").filter(pl.col("metric") != "ppl")
    for i, m in bad_metric.select("i", "metric").iter_rows():
        problems.append(
            Problem(str(ptq_path), f"metric '{m}' is not supported (only 'ppl')", row=i + 2, column="metric")
        )
    if problems:
        raise InvalidDatabase(problems)

    meta = meta.join(family_vocab(meta.get_column("family")), on="family", how="left", maintain_order="left")
    models = meta.select(
        "family",
        "model",
        "params_b",
        pl.lit(None, dtype=pl.Float64).alias("non_embedding_params_b"),
        "train_tokens_b",
        "year",
        *(["released", "released_source"] if released_csv is not None else []),
        pl.lit(None, dtype=pl.String).alias("architecture"),
        "position_encoding",
        "norm",
        "mlp",
        "vocab_size",
        "vocab_source",
        pl.col("source").alias("reference"),
        pl.lit(None, dtype=pl.String).alias("notes"),
    )

    rows = []
    for i, r in enumerate(ptq.iter_rows(named=True)):
        kind = _w_kind(r["method"], r["dtype_label"], r["w_bits"])
        try:
            w_bits_eff = _w_bits_eff(kind, r["method"], r["dtype_label"], r["w_bits"], r["group_size"])
        except QBayesError as exc:
            problems.append(Problem(str(ptq_path), str(exc), row=i + 2, column="dtype_label"))
            continue
        rows.append(
            {
                "model": r["model"],
                "method": BASELINE_METHOD if r["method"] == "fp16" else r["method"],
                "w_kind": kind,
                "w_bits": r["w_bits"],
                "group_size": r["group_size"],
                "w_bits_eff": w_bits_eff,
                "dtype_label": r["dtype_label"],
                "act_bits": r["act_bits"],
                "eval_set": r["eval_set"],
                "seq_len": r["seq_len"],
                "ppl": r["value"],
                "nll": math.log(r["value"]) if r["value"] is not None and r["value"] > 0 else None,
                "source_kind": _source_kind(r["source_arxiv_id"]),
                "source": r["source_arxiv_id"],
                "source_table": r["source_table"],
                "note": r["note"],
                "doubt": _doubt(r["note"]),
            }
        )
    results = pl.DataFrame(rows, schema={c: RESULTS.polars_schema[c] for c in rows[0]}) if rows else RESULTS.empty()
    db = Database(models=models, results=results).conform()

    # the family in the results CSV must agree with model_meta
    fam = (
        ptq.select("model", "family")
        .unique()
        .join(meta.select("model", pl.col("family").alias("meta_family")), on="model", how="left")
    )
    for m, f, mf in fam.filter(
        pl.col("meta_family").is_not_null() & (pl.col("family") != pl.col("meta_family"))
    ).iter_rows():
        problems.append(
            Problem(str(ptq_path), f"model '{m}' has family '{f}' but '{mf}' in {meta_path.name}", column="family")
        )
    problems += db.problems(str(ptq_path.parent))
    if problems:
        raise InvalidDatabase(problems)
    return db
