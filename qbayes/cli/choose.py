"""``qbayes choose``: the best model size, weight format and method under a memory budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from qbayes.api.choose import DEFAULT_BITS, DEFAULT_GROUPS, DEFAULT_METHODS, option_label, read_budget
from qbayes.cli.accuracy import accuracy_options, load_accuracy
from qbayes.cli.options import fit_option, load_fit, load_observed, new_level_option, observed_option
from qbayes.cli.predict import SUFFIXES, _read_queries, _write_atomic, filled_notes
from qbayes.errors import QBayesError

CANDIDATE = re.compile(r"^(?P<model>[^:]+):(?P<params>[^:]+):(?P<ppl>[^:]+)$")


def _candidates_from_flags(specs, family, train_tokens_b, arch):
    """``MODEL:PARAMS_B:FP16_PPL`` strings (one family) as a candidates table."""
    import polars as pl

    if family is None:
        raise QBayesError("--candidate needs --family (the family the candidate models belong to)")
    rows = []
    for s in specs:
        m = CANDIDATE.match(s.strip())
        try:
            if m is None:
                raise ValueError
            rows.append((m["model"].strip(), float(m["params"]), float(m["ppl"])))
        except ValueError:
            raise QBayesError(f"--candidate '{s}': expected MODEL:PARAMS_B:FP16_PPL, e.g. Llama-3-8B:8:6.14") from None
    return pl.DataFrame(
        {
            "family": [family] * len(rows),
            "model": [r[0] for r in rows],
            "params_b": [r[1] for r in rows],
            "fp16_ppl": [r[2] for r in rows],
            "train_tokens_b": [train_tokens_b] * len(rows),
            "arch": [arch] * len(rows),
        },
        schema_overrides={"train_tokens_b": pl.Float64, "arch": pl.String},
    )


def _group_size(text: str) -> int | None:
    if text.strip().lower() in ("per-channel", "none", "0", "-1"):
        return None
    try:
        return int(text)
    except ValueError:
        raise QBayesError(f"--group-size '{text}': expected a positive integer or 'per-channel'") from None


NEAR_MISS = 0.15  # options at most this share over the budget are listed below the table
# an upper bound of perplexity beyond e (degradation > 1 nat, the project's line for a
# collapse) times the fp16 perplexity is shown as "collapses": no one can use that model
COLLAPSE_NATS = 1.0


def budget_options(f):
    """``--budget-gb`` or ``--budget-gib``: the memory budget in the unit at hand (GPU
    memory is sold and reported in GiB, file sizes often in GB)."""
    f = click.option(
        "--budget-gib",
        type=float,
        help="memory budget in GiB (2^30 bytes, as GPUs report memory); or --budget-gb",
    )(f)
    return click.option(
        "--budget-gb",
        type=float,
        help="memory budget in GB (10^9 bytes): weights, plus --overhead-gb and the KV cache of --context",
    )(f)


def option_flags(f):
    """The flags that make the options, shared by ``choose`` and ``compare``: candidate
    models, formats or methods x bits x group sizes, memory beyond the weights, the
    evaluation set, the fit and its draws."""
    decorators = [
        fit_option,
        click.option(
            "--candidate",
            "candidate_specs",
            multiple=True,
            help="a candidate model as MODEL:PARAMS_B:FP16_PPL, e.g. Llama-3-8B:8:6.14 (repeatable)",
        ),
        click.option(
            "--candidates",
            "candidates_path",
            type=click.Path(),
            help="candidate models, .csv or .parquet: family, model, params_b, fp16_ppl "
            "(optional: train_tokens_b, arch, eval_set, new_ok)",
        ),
        click.option("--family", help="family of the --candidate models"),
        click.option("--train-tokens-b", type=float, help="training tokens of the --candidate models, billions"),
        click.option("--arch", help="block design of the --candidate models, e.g. rmsnorm+swiglu"),
        click.option(
            "--format",
            "format_names",
            multiple=True,
            help="a format to consider by name (repeatable): a llama.cpp type (Q4_K_M, IQ3_XS, Q8_0, ...), nf4, "
            "fp8, mxfp4, or a label such as int4-g128 (with each --method; RTN without); see docs/formats.md",
        ),
        click.option(
            "--method",
            "methods",
            multiple=True,
            help=f"quantization methods to consider (repeatable)  [default: {', '.join(DEFAULT_METHODS)}; "
            "with --format only: the labels' method, RTN]",
        ),
        click.option(
            "--w-bits",
            "w_bits",
            multiple=True,
            type=float,
            help="weight bit-widths to consider (repeatable)  "
            f"[default: {', '.join(f'{b:g}' for b in DEFAULT_BITS)}, unless --format is given]",
        ),
        click.option(
            "--group-size",
            "group_sizes",
            multiple=True,
            help="group sizes to consider, or 'per-channel' (repeatable)  "
            f"[default: {', '.join(map(str, DEFAULT_GROUPS))}, unless --format is given]",
        ),
        click.option(
            "--overhead-gb",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            help="memory beyond the weights and KV cache to count against the budget (runtime, activations), GB",
        ),
        click.option(
            "--context",
            type=click.IntRange(1),
            help="count an fp16 KV cache of this many tokens, for candidates whose shape data/model_shapes.csv has",
        ),
        click.option("--eval-set", default="wikitext2", show_default=True),
        click.option("--no-fp16", is_flag=True, help="leave the unquantized models out of the options"),
        click.option(
            "--tolerance",
            type=click.FloatRange(0, 100, max_open=True),
            default=1.0,
            show_default=True,
            help="percent of perplexity within which an option counts as good as another",
        ),
        new_level_option,
        observed_option,
        click.option("--draws", type=click.IntRange(50), default=1000, show_default=True, help="posterior draws used"),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


@dataclass(frozen=True)
class Flags:
    """What :func:`option_flags` read, as the command received it."""

    fit_path: str | None
    candidate_specs: tuple[str, ...]
    candidates_path: str | None
    family: str | None
    train_tokens_b: float | None
    arch: str | None
    format_names: tuple[str, ...]
    methods: tuple[str, ...]
    w_bits: tuple[float, ...]
    group_sizes: tuple[str, ...]
    overhead_gb: float
    context: int | None
    eval_set: str
    no_fp16: bool
    tolerance: float
    new_level: bool
    observed_path: str | None
    draws: int
    seed: int


def read_flags(flags: Flags):
    """The predictor, the candidate models, the grid of options (qbayes.api.choose.Grid)
    and the observed rows (or None); refuses bad flags and typos of known levels."""
    from qbayes.api.choose import make_grid, refuse_typos
    from qbayes.model.predict import Predictor

    if bool(flags.candidate_specs) == bool(flags.candidates_path):
        raise QBayesError(
            "give the candidate models with --candidate MODEL:PARAMS_B:FP16_PPL (repeatable) "
            "or with --candidates FILE, not both"
        )
    if flags.candidates_path:
        if flags.family is not None or flags.train_tokens_b is not None or flags.arch is not None:
            raise QBayesError(
                "--family, --train-tokens-b and --arch describe --candidate models; "
                "a --candidates file gives them as columns (family, train_tokens_b, arch)"
            )
        cands = _read_queries(Path(flags.candidates_path))
        where = str(flags.candidates_path)
        if cands.height == 0:
            raise QBayesError(f"{where}: no candidate models (the table has no rows)")
    else:
        cands = _candidates_from_flags(flags.candidate_specs, flags.family, flags.train_tokens_b, flags.arch)
        where = "--candidate"
    grid = make_grid(
        formats=flags.format_names,
        methods=flags.methods,
        w_bits=flags.w_bits,
        group_sizes=[_group_size(g) for g in flags.group_sizes],
        eval_set=flags.eval_set,
        include_fp16=not flags.no_fp16,
        overhead_gb=flags.overhead_gb,
        context=flags.context,
    )
    fit = load_fit(flags.fit_path)
    observed = load_observed(flags.observed_path)
    predictor = Predictor(fit, n_draws=flags.draws, seed=flags.seed)
    refuse_typos(predictor, cands, grid, where, flags.new_level)
    return predictor, cands, grid, observed


@click.command()
@budget_options
@option_flags
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="options printed")
@click.option(
    "--output",
    "output_path",
    type=click.Path(),
    help="also write every option (over budget too), .csv or .parquet; '-': CSV on stdout instead of the table",
)
@accuracy_options
def choose(budget_gb, budget_gib, top, output_path, task, fp16_acc, accuracy_fit_path, **flags):
    """Rank (model, format) options whose memory fits a budget.

    The formats are named ones (--format Q4_K_M ...) and/or methods x bits x group sizes.
    Weight memory is parameters x bits per weight / 8 (group scales counted; a named format's
    bits per weight from data/formats.csv); --overhead-gb and the KV cache of --context add to
    it. The best option has the lowest predicted median perplexity. For each option the table
    gives the probability that its perplexity, as you would measure it, is within
    --tolerance percent of the best option's, and the median difference to the best with
    its 90% interval; files add P(best), the share of posterior draws in which an option's
    mean perplexity is the lowest within the budget.

    With --task (and --fp16-acc, or a fp16_acc column in --candidates) the options are
    ranked by predicted accuracy on that task instead, P(best) the share of draws in which
    an option has the highest expected accuracy."""
    import polars as pl

    from qbayes.api.choose import choose_table, fp16_accuracies

    flags = Flags(**flags)
    budget, unit, per_unit = read_budget(budget_gb, budget_gib)
    out = None if output_path in (None, "-") else Path(output_path)
    if out is not None and out.suffix not in SUFFIXES:
        raise QBayesError(f"{out}: output must end in .csv or .parquet ('-': CSV on stdout)")
    predictor, cands, grid, observed = read_flags(flags)
    fp16_accs = fp16_accuracies(cands, task, fp16_acc)

    def accuracy(p):
        return load_accuracy(accuracy_fit_path, draws=flags.draws, seed=flags.seed, ppl_fit=p.fit)

    run = choose_table(
        predictor,
        cands,
        grid,
        budget_gb=budget,
        tolerance=flags.tolerance,
        observed=observed,
        task=task,
        fp16_accs=fp16_accs,
        accuracy=accuracy,
    )
    for line in run.notes:
        click.echo(line, err=True)
    table, formats = run.table, grid.formats
    ranked = table.filter(pl.col("within_budget"))
    own_method = frozenset(f.name for f in formats if f.method)
    shown = f"{budget / per_unit:g} {unit}"
    if ranked.height == 0:
        smallest = table.sort("memory_gb").row(0, named=True)
        raise QBayesError(
            f"no option fits in {shown}; the smallest, {option_label(smallest, own_method)}, "
            f"needs {smallest['memory_gb'] / per_unit:.2f} {unit}"
        )
    if output_path == "-":
        click.echo(table.write_csv(), nl=False)
        return
    if out is not None:
        _write_atomic(table, out)
        click.echo(f"wrote {table.height} options to {out}")
    view = View(unit=unit, per_unit=per_unit, tolerance=flags.tolerance, own_method=own_method)
    if task is not None:
        _print_accuracy(ranked.head(top), shown, ranked.height, task, view)
    else:
        _print(ranked.head(top), shown, ranked.height, view, overhead_gb=flags.overhead_gb, context=flags.context)
    _print_near_misses(table, budget, view)
    for r in table.unique("family", keep="first", maintain_order=True).iter_rows(named=True):
        for line in filled_notes(r):
            click.echo(line)


@dataclass(frozen=True)
class View:
    """How options are shown: memory in the budget's unit, the tolerance in percent, and
    the formats whose name says their method."""

    unit: str
    per_unit: float
    tolerance: float
    own_method: frozenset[str]


def sig3(x: float) -> str:
    """``x`` to 3 significant figures, without an exponent."""
    if not np.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    digits = 2 - int(np.floor(np.log10(abs(x))))
    return f"{round(x, digits):,.{max(digits, 0)}f}"


def ppl_text(x: float, fp16_ppl: float) -> str:
    """A perplexity to 3 significant figures, or "collapses" beyond COLLAPSE_NATS."""
    return "collapses" if x > fp16_ppl * np.exp(COLLAPSE_NATS) else sig3(x)


def collapse_text(p: float | None) -> str:
    """A probability of collapse to 2 decimals ("<0.01" below), blank for fp16 and unknowns."""
    if p is None or not np.isfinite(p):
        return ""
    return "<0.01" if p < 0.005 else f"{p:.2f}"


def diff_text(r: dict) -> str:
    """Median difference to the best option, with its 90% interval; an upper bound that
    collapses is shown so."""
    if r["diff_q50"] == 0 and r["diff_q95"] == 0:
        return "best"
    hi = r["diff_q95"]
    upper = "collapses" if hi > r["fp16_ppl"] * (np.exp(COLLAPSE_NATS) - 1) else f"{hi:+.3g}"
    return f"{r['diff_q50']:+.3g} [{r['diff_q05']:+.3g}, {upper}]"


def _print(ranked, shown: str, n_within: int, view: View, *, overhead_gb: float, context: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from qbayes.model.choose import FLAGS
    from qbayes.model.extrapolation import OUTSIDE

    counted = (
        ["weights"]
        + ([f"KV cache of {context} tokens"] if context else [])
        + ([f"{overhead_gb:g} GB overhead"] if overhead_gb else [])
    )
    t = Table(title=f"Best options within {shown} of {' + '.join(counted)} ({n_within} fit)")
    extras = len(counted) > 1
    collapse = "p_collapse" in ranked.columns and ranked.get_column("p_collapse").null_count() < ranked.height
    tol = f"{view.tolerance:g}%"
    for c in (
        "rank",
        "option",
        *([f"weights {view.unit}"] if extras else []),
        f"memory {view.unit}",
        *(["P(collapse)"] if collapse else []),
        "ppl median",
        "90% interval",
        f"P(within {tol} of best)",
        "vs best: median [90%]",
    ):
        t.add_column(c, justify="left" if c == "option" else "right", overflow="fold")
    unseen: dict[str, list[str]] = {}
    outside: dict[str, list[str]] = {}
    for r in ranked.iter_rows(named=True):
        label = option_label(r, view.own_method)
        weights = [f"{r['weights_gb'] / view.per_unit:.2f}"] if extras else []
        marks = "*" if any(r[f] for f in OUTSIDE) else ""
        t.add_row(
            str(r["rank"]),
            label + marks,
            *weights,
            f"{r['memory_gb'] / view.per_unit:.2f}",
            *([collapse_text(r["p_collapse"])] if collapse else []),
            ppl_text(r["ppl_q50"], r["fp16_ppl"]),
            f"[{ppl_text(r['ppl_q05'], r['fp16_ppl'])}, {ppl_text(r['ppl_q95'], r['fp16_ppl'])}]",
            f"{r['p_within_tolerance']:.2f}",
            diff_text(r),
        )
        for flag in FLAGS:
            if r[flag]:
                what = flag.removeprefix("new_").replace("_", " ")
                names = unseen.setdefault(what, [])
                value = {"method": r["method"], "eval set": r["eval_set"], "format": r["format"]}.get(what, r["family"])
                if value not in names:
                    names.append(value)
        for flag, what in OUTSIDE.items():
            if r[flag] and label not in outside.setdefault(what, []):
                outside[what].append(label)
    Console(width=max(Console().width, 130)).print(t)
    click.echo(
        f"P(within {tol} of best): probability that the option's perplexity, as you would measure it, is at most "
        f"{tol} above the best option's; vs best: its perplexity minus the best's. 'collapses': beyond e times the "
        "fp16 perplexity (degradation over 1 nat). P(best) is in --output files."
    )
    if collapse:
        click.echo(
            "P(collapse): probability that the option breaks down to near-uniform predictions (the model's collapse "
            "regime); the ranking's median and P(best) include it, so an option likely to collapse ranks low."
        )
    for what, names in unseen.items():
        click.echo(
            f"{what} unseen by the fit ({', '.join(names)}): predicted from the fitted population, with wider intervals"
        )
    for what, labels in outside.items():
        click.echo(f"* extrapolated, {what} outside the fitted range or kind: {', '.join(labels)}")


def _print_near_misses(table, budget_gb: float, view: View) -> None:
    """Options at most NEAR_MISS over the budget that would rank above its worst shown
    option, below the table: one may find the few hundred MB."""
    import polars as pl

    over = table.filter(~pl.col("within_budget") & (pl.col("memory_gb") <= budget_gb * (1 + NEAR_MISS)))
    if over.height == 0:
        return
    click.echo(f"Just over the budget (within {NEAR_MISS:.0%}):")
    for r in over.sort("ppl_q50").head(5).iter_rows(named=True):
        need = (r["memory_gb"] - budget_gb) / view.per_unit
        click.echo(
            f"  {option_label(r, view.own_method)}: {r['memory_gb'] / view.per_unit:.2f} {view.unit} "
            f"({need:+.2f}), median perplexity {ppl_text(r['ppl_q50'], r['fp16_ppl'])}"
        )


def _print_accuracy(ranked, shown: str, n_within: int, task: str, view: View) -> None:
    """The options within the budget ranked by predicted accuracy on ``task``."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Best options within {shown} by accuracy on {task} ({n_within} fit)")
    for c in ("rank", "option", f"memory {view.unit}", "acc % median", "90% interval", "P(best)", "ppl median"):
        t.add_column(c, justify="left" if c == "option" else "right")
    for r in ranked.iter_rows(named=True):
        measured = r["method"] == "fp16"
        t.add_row(
            str(r["acc_rank"]),
            option_label(r, view.own_method),
            f"{r['memory_gb'] / view.per_unit:.2f}",
            f"{r['acc_q50']:.1f}",
            "measured" if measured else f"[{r['acc_q05']:.1f}, {r['acc_q95']:.1f}]",
            f"{r['acc_p_best']:.2f}",
            ppl_text(r["ppl_q50"], r["fp16_ppl"]),
        )
    Console().print(t)
    click.echo(
        f"P(best): share of posterior draws in which the option has the highest expected accuracy on {task} of all "
        "options within the budget; intervals include the task's measurement noise."
    )
