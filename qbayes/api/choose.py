"""The ranked options under a memory budget: the work behind ``qbayes choose`` and
`qbayes.Model.choose`, one code path for both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from qbayes.api.predict import AccuracyLoader
from qbayes.db.named_formats import COLUMN as FORMAT
from qbayes.db.named_formats import NamedFormat, lookup_all, method_hints
from qbayes.errors import QBayesError
from qbayes.model import conditioning, known_families, unseen
from qbayes.model.accuracy.choose import rank_by_accuracy
from qbayes.model.accuracy.predict import check_queries
from qbayes.model.choose import choose as rank_options
from qbayes.model.choose import options
from qbayes.model.extrapolation import FittedRange, outside
from qbayes.model.predict import Predictor
from qbayes.model.respell import describe

DEFAULT_METHODS = ("RTN", "GPTQ", "AWQ")
DEFAULT_BITS = (2.0, 3.0, 4.0, 8.0)
DEFAULT_GROUPS = (128,)
GIB = 2**30 / 1e9  # GB per GiB


@dataclass
class Grid:
    """The options to score per candidate model: named formats and/or methods x bits x
    group sizes (None: per-channel), and what counts against the budget beside the weights."""

    formats: list[NamedFormat]
    methods: tuple[str, ...]
    w_bits: tuple[float, ...]
    group_sizes: tuple[int | None, ...]
    eval_set: str = "wikitext2"
    include_fp16: bool = True
    overhead_gb: float = 0.0
    context: int | None = None

    def keywords(self) -> dict:
        """The keyword arguments of qbayes.model.choose.scored_options this grid stands for."""
        return dict(
            self.option_keywords(), include_fp16=self.include_fp16, overhead_gb=self.overhead_gb, context=self.context
        )

    def option_keywords(self) -> dict:
        """The keyword arguments of qbayes.model.choose.options (which options, not their memory)."""
        return dict(
            methods=self.methods,
            w_bits=self.w_bits,
            group_sizes=list(self.group_sizes),
            formats=self.formats,
            eval_set=self.eval_set,
        )


@dataclass
class ChoiceRun:
    """Every option (``table``, what ``qbayes choose --output`` writes) and lines for the user."""

    table: pl.DataFrame
    notes: list[str] = field(default_factory=list)


def read_budget(budget_gb: float | None, budget_gib: float | None) -> tuple[float, str, float]:
    """(budget in GB, the unit the user gave, GB per that unit)."""
    if (budget_gb is None) == (budget_gib is None):
        raise QBayesError("give the memory budget with --budget-gib (GiB, as GPUs report it) or --budget-gb (GB)")
    if budget_gib is not None:
        return budget_gib * GIB, "GiB", GIB
    return budget_gb, "GB", 1.0


def make_grid(
    *,
    formats: Sequence[str] = (),
    methods: Sequence[str] = (),
    w_bits: Sequence[float] = (),
    group_sizes: Sequence[int | None] = (),
    **rest,
) -> Grid:
    """The grid of the given formats, methods, bits and group sizes; without formats (or
    with bits or group sizes beside them) the method x bits x group grid with its defaults."""
    named = lookup_all(tuple(formats))
    if not named or w_bits or group_sizes:
        w_bits, group_sizes = w_bits or DEFAULT_BITS, group_sizes or DEFAULT_GROUPS
        methods = methods or DEFAULT_METHODS
    return Grid(named, tuple(methods), tuple(w_bits), tuple(group_sizes), **rest)


def refuse_typos(predictor: Predictor, cands: pl.DataFrame, grid: Grid, where: str, new_level: bool) -> None:
    """Refuse candidate families, evaluation sets and methods that look like typos of levels
    the fit knows (unless ``new_level`` or the candidates' ``new_ok`` says they are new)."""
    enc, fams = predictor.fit.encoding, known_families.load()
    named = cands if "eval_set" in cands.columns else cands.with_columns(pl.lit(grid.eval_set).alias("eval_set"))
    unseen.refuse_typos(named, enc, where, new_level or unseen.new_ok_values(cands, where), families=fams)
    methods = pl.DataFrame({"method": list(grid.methods)}, schema={"method": pl.String})
    unseen.refuse_typos(methods, enc, "--method", new_level, families=fams)


def fp16_accuracies(cands: pl.DataFrame, task: str | None, fp16_acc: float | None) -> dict[str, float]:
    """model -> unquantized accuracy on ``task`` (percent): ``fp16_acc`` for a single
    candidate model, else the candidates' fp16_acc column; empty without a task."""
    column = "fp16_acc" in cands.columns
    if task is None:
        if fp16_acc is not None or column:
            raise QBayesError("fp16 accuracies are given, but no --task: name the task they were measured on")
        return {}
    if fp16_acc is not None and column:
        raise QBayesError(
            "give the unquantized accuracy with --fp16-acc or as the candidates' fp16_acc column, not both"
        )
    if column:
        values = cands.select("model", pl.col("fp16_acc").cast(pl.Float64, strict=False))
        bad = values.filter(pl.col("fp16_acc").is_null())["model"].to_list()
        if bad:
            raise QBayesError(f"candidates: fp16_acc is empty or not a number for {', '.join(bad)}")
        return dict(values.iter_rows())
    if fp16_acc is None:
        raise QBayesError("--task and --fp16-acc go together: the task and the unquantized model's accuracy on it")
    models = cands.get_column("model").unique(maintain_order=True).to_list()
    if len(models) > 1:
        raise QBayesError(
            "--fp16-acc is one model's accuracy; with several candidate models give a --candidates "
            "file with a fp16_acc column"
        )
    return {models[0]: fp16_acc}


def with_outside(predictor: Predictor, table: pl.DataFrame) -> pl.DataFrame:
    """``table`` (options or predictions) with the extrapolation flags (qbayes.model.extrapolation)."""
    flags = outside(
        FittedRange.of(predictor.fit), table["params_b"], table["train_tokens_b_used"], table["bits"], table[FORMAT]
    )
    # fp16 options are measured, not predicted: nothing about them is extrapolated
    quantized = pl.lit(table["method"] != "fp16")
    flags = flags.with_columns(pl.col(c) & quantized for c in flags.columns)
    return pl.concat([table, flags], how="horizontal")


def choose_table(
    predictor: Predictor,
    cands: pl.DataFrame,
    grid: Grid,
    *,
    budget_gb: float,
    tolerance: float,
    observed: conditioning.Observed | None = None,
    task: str | None = None,
    fp16_accs: dict[str, float] | None = None,
    accuracy: AccuracyLoader | None = None,
) -> ChoiceRun:
    """Every option of ``grid`` for the candidate models ``cands``, ranked within
    ``budget_gb`` (GB) by predicted median perplexity, or with ``task`` by predicted
    accuracy (percent); ``tolerance`` in percent of perplexity."""
    notes: list[str] = []

    def on_conditioned(cond) -> None:
        notes.extend(conditioning.unmatched(observed, cond.rows.query) + conditioning.report(cond))

    table = rank_options(
        predictor,
        cands,
        budget_gb=budget_gb,
        tolerance=tolerance / 100,
        observed=observed,
        on_conditioned=on_conditioned,
        **grid.keywords(),
    )
    table = with_outside(predictor, table)
    if task is not None:
        if accuracy is None:
            raise QBayesError(f"options are ranked on {task}, but no accuracy fit is at hand")
        acc = accuracy(predictor)
        fp16_accs = fp16_accs or {}
        asked = pl.DataFrame({"task": [task] * len(fp16_accs), "fp16_acc": list(fp16_accs.values())})
        check_queries(asked, acc.tasks, "candidates")
        table = rank_by_accuracy(table, options(cands, **grid.option_keywords()), predictor, acc, task, fp16_accs)
    notes += describe(predictor.respelled)
    notes += method_hints(table.filter(pl.col("new_method"))["method"])
    return ChoiceRun(table=table, notes=notes)
