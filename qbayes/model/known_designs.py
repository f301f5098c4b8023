"""Block designs of well-known model families, for queries that do not name one.

A family the fit has seen brings its own design (norm + MLP, design.arch_expr). A family it
has not seen would otherwise be a new design too, predicted from the population of designs,
with no training-token term (tokens are measured within designs). Yet most families people
ask about next are built like one the data hold: Llama-3, Qwen and Mistral are LLaMA-style
(RMSNorm + SwiGLU), Phi-2 and Pythia have BLOOM's and Falcon's LayerNorm + GELU. The shipped
table ``data/block_designs.csv`` records each family's norm and MLP as its Hugging Face
transformers implementation builds them (column ``hf_class``), with other spellings of the
family name as ``aliases``. A fit stores the table (normalised family name -> design) in its
encoding, so its predictions do not change with a later edit of the file.

Family names are matched case- and punctuation-blind (respell.key): "Llama-3", "llama3" and
"LLAMA 3" are one key.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from qbayes.errors import QBayesError
from qbayes.model.design import arch_expr
from qbayes.model.respell import key_expr

REGISTRY = Path(__file__).resolve().parents[2] / "data" / "block_designs.csv"
COLUMNS = ("family", "aliases", "norm", "mlp", "hf_class")


def load(path: Path = REGISTRY) -> dict[str, str]:
    """Normalised family name (and alias) -> design, "norm+mlp" as design.arch_expr spells it."""
    if not path.exists():
        raise QBayesError(f"{path}: the table of known block designs is missing (it ships with qbayes)")
    df = pl.read_csv(path, infer_schema_length=0)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise QBayesError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
    empty = df.filter(pl.any_horizontal(pl.col("family", "norm", "mlp").is_null()))
    if empty.height:
        raise QBayesError(f"{path}: rows without family, norm or mlp: {empty['family'].to_list()}")
    names = (df.with_columns(arch_expr(df).alias("arch"),
                             pl.concat_list(pl.col("family"), pl.col("aliases").fill_null("").str.split(";"))
                             .alias("name"))
             .explode("name").with_columns(pl.col("name").str.strip_chars())
             .filter(pl.col("name") != "")
             .with_columns(key_expr(pl.col("name")).alias("key")))
    dup = names.filter(pl.col("key").is_duplicated())
    if dup.height:
        which = sorted(set(dup["name"].to_list()))
        raise QBayesError(f"{path}: family names listed more than once (case and punctuation ignored): "
                          f"{', '.join(which)}")
    return dict(zip(names["key"].to_list(), names["arch"].to_list()))
