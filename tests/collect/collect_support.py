"""Helpers shared by the collection tests (a module of its own: ``conftest`` is a name
the repository's top-level tests already use)."""

from __future__ import annotations

import contextlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "collectors" / "tiny.toml"


@contextlib.contextmanager
def registered(*test_methods):
    """Test methods in the method registry for the duration of a block."""
    from qbayes.collect import methods

    for m in test_methods:
        methods.register(m, replace=True)
    try:
        yield
    finally:
        for m in test_methods:
            methods.unregister(m.name)


def write_grid(
    path: Path,
    *,
    methods: str,
    eval_sets=("shakespeare",),
    calib=("shakespeare",),
    features: bool = False,
    extra: str = "",
) -> Path:
    """A small grid file for a focused test (the tiny grid's budgets)."""
    evals = ", ".join(f'"{e}"' for e in eval_sets)
    cals = ", ".join(f'"{c}"' for c in calib)
    path.write_text(f"""
[eval]
sets = [{evals}]
tokens = 1024
seq_len = 128

[calibration]
sets = [{cals}]
samples = 4
seq_len = 128

[self_check]
tokens = 512

[efficiency]
decode_tokens = 8
prompt_tokens = 8

[features]
landscape = {str(features).lower()}
outliers = {str(features).lower()}
landscape_eval = ["shakespeare"]
outlier_calib = ["shakespeare"]
tokens = 256
seq_len = 128
hutchinson_samples = 4
power_iters = 4
radii = [0.1]
radial_directions = 1
outlier_tokens = 256
{extra}
{methods}
""")
    return path


# --- texts in the formats of the published sets' own files ---------------------------


def wikitext_rows(text: str) -> list[str]:
    """``text`` as rows of WikiText's hub parquet files: each line of the raw file with its
    newline, a blank line as "" (here: a blank line after every line of ``text``, as
    WikiText has between paragraphs)."""
    return [row for line in text.split("\n") if line.strip() for row in (line + "\n", "")]


def write_parquet(path: Path, column: str, rows: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: rows}), path)
    return path


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    """JSON lines, gzip-compressed when the name ends in .gz (as C4's shards are)."""
    import gzip
    import json

    data = "".join(json.dumps(d) + "\n" for d in docs).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def wikitext_raw(rows: list[str]) -> str:
    """The raw file (wiki.test.raw) the rows come from: a blank row is an empty line."""
    return "".join(r if r else "\n" for r in rows)
