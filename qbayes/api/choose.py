"""The ranked options under a memory budget, and two options compared: the work behind
``qbayes choose`` and `qbayes.Model.choose`, ``qbayes compare`` and `qbayes.Model.compare`,
one code path for each pair."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.api.predict import AccuracyLoader
from qbayes.db.named_formats import COLUMN as FORMAT
from qbayes.db.named_formats import NamedFormat, lookup_all, method_hints
from qbayes.errors import QBayesError, suggest
from qbayes.model import conditioning, known_families, unseen
from qbayes.model.accuracy.choose import rank_by_accuracy
from qbayes.model.accuracy.predict import check_queries
from qbayes.model.choose import choose as rank_options
from qbayes.model.choose import options, scored_options
from qbayes.model.extrapolation import FittedRange, outside
from qbayes.model.predict import Predictor
from qbayes.model.respell import describe
from qbayes.names import key

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


def option_label(r: dict, own_method: frozenset[str] = frozenset()) -> str:
    """An option (a row of the options table) as people name it; ``own_method``: formats
    whose name says the method."""
    if r["method"] == "fp16":
        return f"{r['model']} fp16"
    if r["format"] is not None:
        return f"{r['model']} {r['format']}" + ("" if r["format"] in own_method else f" {r['method']}")
    group = "per-channel" if r["group_size"] is None else f"g{r['group_size']}"
    return f"{r['model']} {r['method']} w{r['w_bits']:g} {group}"


def find_option(labels: list[str], models: list[str], text: str) -> int:
    """The option whose label is ``text`` (case and punctuation ignored), or, among the
    options of one model, whose label without the model name is; refuses none or several."""
    if not isinstance(text, str):
        raise QBayesError(f"an option is named by a string such as 'Q4_K_M', not {text!r}")
    k = key(text)
    exact = [i for i, label in enumerate(labels) if key(label) == k]
    if len(exact) == 1:
        return exact[0]
    short = [i for i, (label, m) in enumerate(zip(labels, models)) if key(label.removeprefix(m)) == k]
    if len(short) == 1:
        return short[0]
    if short:
        raise QBayesError(
            f"option '{text}' is one of several models' ({', '.join(labels[i] for i in short)}); "
            "name it with its model, in quotes"
        )
    raise QBayesError(f"no option '{text}'{suggest(text, labels)}; the options are: {', '.join(labels)}")


COMPARE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class Comparison:
    """Two options' perplexity as one would measure each (observation noise included):
    ``first`` and ``second`` (their labels), ``options`` (their two rows of the options
    table: ``ppl_q05`` ... ``ppl_q95`` perplexity, ``memory_gb`` GB, ``fp16_ppl``, ...),
    ``difference`` (first minus second, perplexity, at ``COMPARE_QUANTILES``),
    ``relative`` (first / second - 1, at the same quantiles), ``p_first_lower``,
    ``p_within_tolerance`` (|relative| at most ``tolerance`` percent), ``p_first_higher``
    (more than ``tolerance`` percent higher) and the ``notes`` the command prints.

    Examples:
        >>> import polars as pl, qbayes
        >>> cands = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
        ...                       "fp16_ppl": [6.85]})
        >>> c = qbayes.load(n_draws=200).compare(cands, "q4_k_m", "Q8_0", formats=["Q4_K_M", "Q8_0"])
        >>> c.first, c.second
        ('Qwen2.5-7B Q4_K_M', 'Qwen2.5-7B Q8_0')
        >>> bool(c.difference[0.5] > 0)  # Q4_K_M's perplexity is likely the higher
        True
    """

    first: str
    second: str
    options: pl.DataFrame
    difference: dict[float, float]
    relative: dict[float, float]
    p_first_lower: float
    p_within_tolerance: float
    p_first_higher: float
    tolerance: float
    notes: list[str] = field(default_factory=list)


def compare_options(
    predictor: Predictor,
    cands: pl.DataFrame,
    grid: Grid,
    first: str,
    second: str,
    *,
    tolerance: float,
    observed: conditioning.Observed | None = None,
) -> Comparison:
    """Options ``first`` and ``second`` (named as `option_label` names them, or without
    the model name when one model has them) of ``grid`` for ``cands``, compared draw by
    draw; ``tolerance`` in percent of perplexity."""
    notes: list[str] = []

    def on_conditioned(cond) -> None:
        notes.extend(conditioning.unmatched(observed, cond.rows.query) + conditioning.report(cond))

    scored = scored_options(predictor, cands, **grid.keywords(), observed=observed, on_conditioned=on_conditioned)
    own_method = frozenset(f.name for f in grid.formats if f.method)
    rows = list(scored.table.iter_rows(named=True))
    labels = [option_label(r, own_method) for r in rows]
    models = [r["model"] for r in rows]
    a, b = find_option(labels, models, first), find_option(labels, models, second)
    if a == b:
        raise QBayesError(f"'{first}' and '{second}' are the same option, {labels[a]}")
    diff = scored.measured[:, a] - scored.measured[:, b]
    rel = scored.measured[:, a] / scored.measured[:, b] - 1
    tol = tolerance / 100
    return Comparison(
        first=labels[a],
        second=labels[b],
        options=scored.table[[a, b]],
        difference=dict(zip(COMPARE_QUANTILES, np.quantile(diff, COMPARE_QUANTILES).tolist())),
        relative=dict(zip(COMPARE_QUANTILES, np.quantile(rel, COMPARE_QUANTILES).tolist())),
        p_first_lower=float(np.mean(diff < 0)),
        p_within_tolerance=float(np.mean(np.abs(rel) <= tol)),
        p_first_higher=float(np.mean(rel > tol)),
        tolerance=tolerance,
        notes=notes + describe(predictor.respelled),
    )
