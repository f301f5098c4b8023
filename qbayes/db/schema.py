"""The database schema: every table, column, dtype and allowed value, in one place.

A database is a directory holding one parquet file per table (``models.parquet``,
``results.parquet``, ``features.parquet``, ``failures.parquet``).  Each file carries
``qbayes.schema_version`` and ``qbayes.table`` in its parquet key-value metadata, so a
shard written by a newer qbayes is refused instead of misread.

Conventions (documented for users in ``data/README.md``):

* an unquantized baseline is a ``results`` row with ``method == "none"``;
* ``group_size`` null means per output channel;
* ``nll`` is the mean negative log-likelihood in nats per token, so ``ppl == exp(nll)``;
* ``doubt`` is null for rows we trust, ``"caution"`` for rows kept in fits but worth a
  second look, ``"suspect"`` for rows fits leave out by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SCHEMA_VERSION = 1
META_VERSION_KEY = "qbayes.schema_version"
META_TABLE_KEY = "qbayes.table"

BASELINE_METHOD = "none"

METHODS = (
    BASELINE_METHOD,
    "RTN",
    "GPTQ",
    "GPTQ-R",
    "AWQ",
    "AWQ+GPTQ",
    "OmniQuant",
    "SmoothQuant",
    "SpQR",
    "SqueezeLLM",
    "QuIP",
    "BiLLM",
    "PB-LLM",
    "DB-LLM",
    "I-LLM",
    "OBQ",
    "llama.cpp-kquant",
    "llama.cpp-legacy",
    "quanto",
    "AutoRound",
    "HQQ",
)
# float: unquantized; mixed: average bits over a mix of precisions (SpQR, SqueezeLLM, PB-LLM)
W_KINDS = ("float", "int", "fp", "nf", "mx", "kquant", "mixed")
EVAL_SETS = ("wikitext2", "c4", "ptb", "shakespeare", "bible", "pystdlib")
CALIB_SETS = ("c4", "wikitext2", "pile", "shakespeare", "bible", "pystdlib", "noise")
SOURCE_KINDS = ("paper", "repository", "collector")
DOUBTS = ("caution", "suspect")
FEATURES = (
    "hessian_trace",
    "hessian_top_eig",
    "radial_loss",
    "act_max_abs",
    "act_median_abs",
    "act_kurtosis",
    "act_outlier_frac",
    "weight_kurtosis",
    "weight_max_over_std",
    "sqnr_db",  # per layer; scope "METHOD/DTYPE_LABEL/CALIB:layer" (overall SQNR is results.sqnr_db)
)


@dataclass(frozen=True)
class Column:
    """One column: dtype, nullability, allowed values and numeric range."""

    name: str
    dtype: pl.DataType
    doc: str
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    lo: float | None = None  # exclusive lower bound
    hi: float | None = None  # inclusive upper bound
    lo_inclusive: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)


def _s(name, doc, **kw):
    return Column(name, pl.String(), doc, **kw)


def _f(name, doc, **kw):
    return Column(name, pl.Float64(), doc, **kw)


def _i(name, doc, **kw):
    return Column(name, pl.Int64(), doc, **kw)


# Provenance shared by every measured row (null for rows imported from publications).
PROVENANCE = (
    _s("run_id", "collector run id (or import id)", nullable=True),
    _s("qbayes_version", "qbayes version that wrote the row", nullable=True),
    _s("lib_versions", "JSON object of library versions", nullable=True),
    _s("device", "device the measurement ran on", nullable=True),
    _i("seed", "random seed", nullable=True),
    _s("git_commit", "git commit of the collector code", nullable=True),
    Column("created_at", pl.Datetime("us", "UTC"), "time the row was written", nullable=True),
    _f("wall_s", "wall time of the step that produced the row, seconds", nullable=True, lo=0, lo_inclusive=True),
)

MODELS = Table(
    name="models",
    doc="One row per base model.",
    key=("model",),
    columns=(
        _s("family", "model family (e.g. OPT, LLaMA-1)"),
        _s("model", "model name, unique"),
        _f("params_b", "parameters, billions", lo=0),
        _f("non_embedding_params_b", "non-embedding parameters, billions", nullable=True, lo=0),
        _f("train_tokens_b", "training tokens, billions (null: undisclosed)", nullable=True, lo=0),
        _i("year", "release year", nullable=True),
        Column(
            "released",
            pl.Date(),
            "first public release of the weights (forward validation orders families by it)",
            nullable=True,
        ),
        _s("released_source", "where the release date comes from", nullable=True),
        _s("architecture", "architecture (e.g. llama, gpt2, opt)", nullable=True),
        _s("position_encoding", "position encoding", nullable=True),
        _s("norm", "normalisation", nullable=True),
        _s("mlp", "MLP type", nullable=True),
        _i(
            "vocab_size",
            "vocabulary size, tokens (config.json vocab_size; anchors the collapse level, ln V nats per token)",
            nullable=True,
            lo=2,
            lo_inclusive=True,
        ),
        _s("vocab_source", "where vocab_size comes from", nullable=True),
        _s("reference", "where the model is described", nullable=True),
        _s("notes", "free-text notes", nullable=True),
    ),
)

# The quantization configuration of a measured row, as results and accuracy both key it:
# the model and how its weights were quantized (results add w_sym between the two parts).
CONFIGURATION = (
    _s("model", "model name (key into models)"),
    _s("method", "quantization method; 'none' = unquantized baseline", allowed=METHODS),
    _s("w_kind", "weight number format kind", allowed=W_KINDS),
    _f("w_bits", "nominal weight bits", lo=0, hi=32),
    _i("group_size", "quantization group size; null = per output channel", nullable=True, lo=0),
    _f("w_bits_eff", "effective bits per weight incl. scale/zero overhead, where known", nullable=True, lo=0, hi=40),
)
CONFIGURATION_TAIL = (
    _s("dtype_label", "format label as printed or as configured (e.g. int3-g128, Q4_K_M)"),
    _f("act_bits", "activation bits; 16 = weight-only", lo=0, hi=32),
    _s("calib_set", "calibration set, where known", nullable=True, allowed=CALIB_SETS),
)

RESULTS = Table(
    name="results",
    doc="One row per measured (model, quantization configuration, evaluation set).",
    key=(
        "model",
        "method",
        "w_kind",
        "w_bits",
        "group_size",
        "dtype_label",
        "act_bits",
        "calib_set",
        "eval_set",
        "seq_len",
        "source",
        "source_table",
    ),
    columns=(
        *CONFIGURATION,
        Column("w_sym", pl.Boolean(), "symmetric weight quantization, where known", nullable=True),
        *CONFIGURATION_TAIL,
        _s("eval_set", "evaluation text", allowed=EVAL_SETS),
        _i("seq_len", "evaluation sequence length, where stated", nullable=True, lo=0),
        _i("eval_tokens", "number of evaluated tokens, where known", nullable=True, lo=0),
        _i("eval_windows", "number of evaluation windows of seq_len tokens, where known", nullable=True, lo=0),
        _f("ppl", "perplexity", lo=1),
        _f("nll", "mean negative log-likelihood, nats per token", nullable=True, lo=0, lo_inclusive=True),
        _f("nll_se", "standard error of nll", nullable=True, lo=0, lo_inclusive=True),
        _f("sqnr_db", "signal-to-quantization-noise ratio of the weights, dB", nullable=True),
        _i("weight_bytes", "bytes of the (quantized) weights", nullable=True, lo=0),
        _f("decode_tok_s", "decode throughput, tokens per second", nullable=True, lo=0),
        _f(
            "kld_mean",
            "mean KL divergence from the unquantized model per token, nats (llama.cpp's Mean KLD)",
            nullable=True,
            lo=0,
            lo_inclusive=True,
        ),
        _f("kld_se", "standard error of kld_mean", nullable=True, lo=0, lo_inclusive=True),
        _f("kld_p99", "99th percentile of the per-token KL divergence, nats", nullable=True, lo=0, lo_inclusive=True),
        _f(
            "top1_agree",
            "share of tokens whose most likely next token is the unquantized model's",
            nullable=True,
            lo=0,
            hi=1,
            lo_inclusive=True,
        ),
        _s("source_kind", "paper, repository or collector", allowed=SOURCE_KINDS),
        _s("source", "arXiv id, repository reference, or 'qbayes-collect'"),
        _s("source_table", "table within the source", nullable=True),
        _s("note", "setup details and known doubts, as recorded", nullable=True),
        _s("doubt", "null, 'caution' or 'suspect' (see data/README.md)", nullable=True, allowed=DOUBTS),
        *PROVENANCE,
    ),
)

ACCURACY = Table(
    name="accuracy",
    doc="One row per measured (model, quantization configuration, task): downstream task accuracy.",
    key=(
        "model",
        "method",
        "w_kind",
        "w_bits",
        "group_size",
        "dtype_label",
        "act_bits",
        "calib_set",
        "task",
        "shots",
        "metric",
        "source",
        "source_table",
    ),
    columns=(
        *CONFIGURATION,
        *CONFIGURATION_TAIL,
        _s("task", "lm-evaluation-harness task name (e.g. mmlu, arc_easy) or the source's average"),
        _i("shots", "few-shot examples per question (null: not stated)", nullable=True, lo=0, lo_inclusive=True),
        _s("metric", "what was scored: acc, acc_norm, exact_match, ..."),
        _f("acc", "accuracy, percent", lo=0, hi=100, lo_inclusive=True),
        _f("acc_se", "standard error of acc, percentage points, where known", nullable=True, lo=0, lo_inclusive=True),
        _i("n_items", "number of scored questions, where known", nullable=True, lo=0),
        _s("task_version", "the task definition's version, where known", nullable=True),
        _s("harness_version", "lm-evaluation-harness version (or git commit) that scored it", nullable=True),
        _f(
            "wikitext2_ppl",
            "the same configuration's WikiText-2 perplexity, where the source prints it",
            nullable=True,
            lo=1,
        ),
        _s("source_kind", "paper, repository or collector", allowed=SOURCE_KINDS),
        _s("source", "arXiv id, repository reference, or 'qbayes-collect'"),
        _s("source_table", "table within the source", nullable=True),
        _s("note", "setup details and known doubts, as recorded", nullable=True),
        _s("doubt", "null, 'caution' or 'suspect' (see data/README.md)", nullable=True, allowed=DOUBTS),
        *PROVENANCE,
    ),
)

FEATURES_TABLE = Table(
    name="features",
    doc="Per-model loss-landscape and outlier features, long format.",
    key=("model", "feature", "scope", "calib_set", "eval_set", "radius"),
    columns=(
        _s("model", "model name (key into models)"),
        _s("feature", "feature name", allowed=FEATURES),
        _s("scope", "'model' for a whole-model summary, else a layer/module name"),
        _s("calib_set", "calibration set the statistic was measured on", nullable=True, allowed=CALIB_SETS),
        _s("eval_set", "text the loss-landscape statistic was measured on", nullable=True, allowed=EVAL_SETS),
        _f("radius", "radius along the random direction (radial_loss only)", nullable=True),
        _f("value", "feature value"),
        _f("se", "standard error, where estimated", nullable=True, lo=0, lo_inclusive=True),
        *PROVENANCE,
    ),
)

FAILURES = Table(
    name="failures",
    doc="Configurations a collector tried and could not measure, with the reason.",
    key=("run_id", "model", "config", "stage"),
    columns=(
        _s("run_id", "collector run id"),
        _s("model", "model name"),
        _s("config", "configuration label (method/format/calibration/evaluation)"),
        _s("stage", "step that failed (load, quantize, self-check, evaluate, feature)"),
        _s("error_type", "exception class or check name"),
        _s("message", "what went wrong"),
        Column("created_at", pl.Datetime("us", "UTC"), "when it failed", nullable=True),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (MODELS, RESULTS, ACCURACY, FEATURES_TABLE, FAILURES)}
# nullable columns added within schema version 1: files written before them are read with
# the column empty, rather than refused
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "models": ("released", "released_source", "vocab_size", "vocab_source"),
    "results": ("eval_windows", "kld_mean", "kld_se", "kld_p99", "top1_agree"),
}
