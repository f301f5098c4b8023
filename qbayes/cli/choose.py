"""``qbayes choose``: the best model size, weight format and method under a memory budget."""

from __future__ import annotations

import re
from pathlib import Path

import click

from qbayes.cli.accuracy import accuracy_options, check_task_flags, load_accuracy
from qbayes.cli.options import fit_option, load_fit
from qbayes.cli.predict import SUFFIXES, _read_queries, _write_atomic, filled_notes
from qbayes.errors import QBayesError

DEFAULT_METHODS = ("RTN", "GPTQ", "AWQ")
DEFAULT_BITS = (2.0, 3.0, 4.0, 8.0)
DEFAULT_GROUPS = ("128",)
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


@click.command()
@fit_option
@click.option(
    "--budget-gb",
    type=float,
    required=True,
    help="memory budget, GB: weights, plus --overhead-gb and the KV cache of --context",
)
@click.option(
    "--candidate",
    "candidate_specs",
    multiple=True,
    help="a candidate model as MODEL:PARAMS_B:FP16_PPL, e.g. Llama-3-8B:8:6.14 (repeatable)",
)
@click.option(
    "--candidates",
    "candidates_path",
    type=click.Path(),
    help="candidate models, .csv or .parquet: family, model, params_b, fp16_ppl "
    "(optional: train_tokens_b, arch, eval_set)",
)
@click.option("--family", help="family of the --candidate models")
@click.option("--train-tokens-b", type=float, help="training tokens of the --candidate models, billions")
@click.option("--arch", help="block design of the --candidate models, e.g. rmsnorm+swiglu")
@click.option(
    "--format",
    "format_names",
    multiple=True,
    help="a format to consider by name (repeatable): a llama.cpp type (Q4_K_M, IQ3_XS, Q8_0, ...), nf4, "
    "fp8, mxfp4, or a label such as int4-g128 (with each --method; RTN without); see docs/formats.md",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    help=f"quantization methods to consider (repeatable)  [default: {', '.join(DEFAULT_METHODS)}; "
    "with --format only: the labels' method, RTN]",
)
@click.option(
    "--w-bits",
    "w_bits",
    multiple=True,
    type=float,
    help="weight bit-widths to consider (repeatable)  "
    f"[default: {', '.join(f'{b:g}' for b in DEFAULT_BITS)}, unless --format is given]",
)
@click.option(
    "--group-size",
    "group_sizes",
    multiple=True,
    help=f"group sizes to consider, or 'per-channel' (repeatable)  [default: {', '.join(DEFAULT_GROUPS)}, "
    "unless --format is given]",
)
@click.option(
    "--overhead-gb",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="memory beyond the weights and KV cache to count against the budget (runtime, activations), GB",
)
@click.option(
    "--context",
    type=click.IntRange(1),
    help="count an fp16 KV cache of this many tokens, for candidates whose shape data/model_shapes.csv has",
)
@click.option("--eval-set", default="wikitext2", show_default=True)
@click.option("--no-fp16", is_flag=True, help="leave the unquantized models out of the options")
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="options printed")
@click.option(
    "--output", "output_path", type=click.Path(), help="also write every option (over budget too), .csv or .parquet"
)
@accuracy_options
@click.option("--draws", type=click.IntRange(50), default=1000, show_default=True, help="posterior draws used")
@click.option("--seed", type=int, default=0, show_default=True)
def choose(
    fit_path,
    budget_gb,
    candidate_specs,
    candidates_path,
    family,
    train_tokens_b,
    arch,
    format_names,
    methods,
    w_bits,
    group_sizes,
    overhead_gb,
    context,
    eval_set,
    no_fp16,
    top,
    output_path,
    task,
    fp16_acc,
    accuracy_fit_path,
    draws,
    seed,
):
    """Rank (model, format) options whose memory fits a budget.

    The formats are named ones (--format Q4_K_M ...) and/or methods x bits x group sizes.
    Weight memory is parameters x bits per weight / 8 (group scales counted; a named format's
    bits per weight from data/formats.csv); --overhead-gb and the KV cache of --context add to
    it. The best option has the lowest predicted median perplexity; P(best) is the share of
    posterior draws in which it beats every other option within the budget.

    With --task (and --fp16-acc, or a fp16_acc column in --candidates) the options are
    ranked by predicted accuracy on that task instead, P(best) the share of draws in which
    an option has the highest expected accuracy."""
    import polars as pl

    from qbayes.db.named_formats import lookup_all, method_hints
    from qbayes.model.choose import choose as rank_options
    from qbayes.model.predict import Predictor
    from qbayes.model.respell import describe

    out = Path(output_path) if output_path else None
    if out is not None and out.suffix not in SUFFIXES:
        raise QBayesError(f"{out}: output must end in .csv or .parquet")
    if bool(candidate_specs) == bool(candidates_path):
        raise QBayesError(
            "give the candidate models with --candidate MODEL:PARAMS_B:FP16_PPL (repeatable) "
            "or with --candidates FILE, not both"
        )
    if candidates_path:
        if family is not None or train_tokens_b is not None or arch is not None:
            raise QBayesError(
                "--family, --train-tokens-b and --arch describe --candidate models; "
                "a --candidates file gives them as columns (family, train_tokens_b, arch)"
            )
        cands = _read_queries(Path(candidates_path))
    else:
        cands = _candidates_from_flags(candidate_specs, family, train_tokens_b, arch)
    fp16_accs = _fp16_accuracies(cands, task, fp16_acc)
    formats = lookup_all(format_names)
    if not formats or w_bits or group_sizes:  # the method x bits x group grid, with its defaults
        w_bits, group_sizes = w_bits or DEFAULT_BITS, group_sizes or DEFAULT_GROUPS
        methods = methods or DEFAULT_METHODS
    predictor = Predictor(load_fit(fit_path), n_draws=draws, seed=seed)
    grid = dict(
        methods=methods,
        w_bits=w_bits,
        group_sizes=[_group_size(g) for g in group_sizes],
        formats=formats,
        eval_set=eval_set,
    )
    table = rank_options(
        predictor,
        cands,
        budget_gb=budget_gb,
        **grid,
        include_fp16=not no_fp16,
        overhead_gb=overhead_gb,
        context=context,
    )
    if task is not None:
        from qbayes.model.accuracy.choose import rank_by_accuracy
        from qbayes.model.accuracy.predict import check_queries
        from qbayes.model.choose import options

        acc = load_accuracy(accuracy_fit_path, draws=draws, seed=seed, ppl_fit=predictor.fit)
        asked = pl.DataFrame({"task": [task] * len(fp16_accs), "fp16_acc": list(fp16_accs.values())})
        check_queries(asked, acc.tasks, "candidates")
        table = rank_by_accuracy(table, options(cands, **grid), predictor, acc, task, fp16_accs)
    for line in describe(predictor.respelled):
        click.echo(line, err=True)
    for line in method_hints(table.filter(pl.col("new_method"))["method"]):
        click.echo(line, err=True)
    ranked = table.filter(pl.col("within_budget"))
    own_method = frozenset(f.name for f in formats if f.method)
    if ranked.height == 0:
        smallest = table.sort("memory_gb").row(0, named=True)
        raise QBayesError(
            f"no option fits in {budget_gb:g} GB; the smallest, {_label(smallest, own_method)}, "
            f"needs {smallest['memory_gb']:.2f} GB"
        )
    if out is not None:
        _write_atomic(table, out)
        click.echo(f"wrote {table.height} options to {out}")
    if task is not None:
        _print_accuracy(ranked.head(top), budget_gb, ranked.height, task, own_method=own_method)
    else:
        _print(
            ranked.head(top), budget_gb, ranked.height, overhead_gb=overhead_gb, context=context, own_method=own_method
        )
    for r in table.unique("family", keep="first", maintain_order=True).iter_rows(named=True):
        for line in filled_notes(r):
            click.echo(line)


def _fp16_accuracies(cands, task, fp16_acc) -> dict[str, float]:
    """model -> unquantized accuracy on ``task``: --fp16-acc for a single candidate model,
    else the candidates' fp16_acc column; empty without a task."""
    import polars as pl

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
    check_task_flags(task, fp16_acc)
    models = cands.get_column("model").unique(maintain_order=True).to_list()
    if len(models) > 1:
        raise QBayesError(
            "--fp16-acc is one model's accuracy; with several candidate models give a --candidates "
            "file with a fp16_acc column"
        )
    return {models[0]: fp16_acc}


def _label(r: dict, own_method: frozenset[str] = frozenset()) -> str:
    """An option as people name it; ``own_method``: formats whose name says the method."""
    if r["method"] == "fp16":
        return f"{r['model']} fp16"
    if r["format"] is not None:
        return f"{r['model']} {r['format']}" + ("" if r["format"] in own_method else f" {r['method']}")
    group = "per-channel" if r["group_size"] is None else f"g{r['group_size']}"
    return f"{r['model']} {r['method']} w{r['w_bits']:g} {group}"


def _print(
    ranked, budget_gb: float, n_within: int, *, overhead_gb: float, context: int | None, own_method: frozenset[str]
) -> None:
    from rich.console import Console
    from rich.table import Table

    from qbayes.model.choose import FLAGS

    counted = (
        ["weights"]
        + ([f"KV cache of {context} tokens"] if context else [])
        + ([f"{overhead_gb:g} GB overhead"] if overhead_gb else [])
    )
    t = Table(title=f"Best options within {budget_gb:g} GB of {' + '.join(counted)} ({n_within} fit)")
    extras = len(counted) > 1
    for c in (
        "rank",
        "option",
        *(["weights GB"] if extras else []),
        "memory GB",
        "ppl median",
        "90% interval",
        "P(best)",
    ):
        t.add_column(c, justify="left" if c == "option" else "right")
    unseen: dict[str, list[str]] = {}
    for r in ranked.iter_rows(named=True):
        weights = [f"{r['weights_gb']:.2f}"] if extras else []
        t.add_row(
            str(r["rank"]),
            _label(r, own_method),
            *weights,
            f"{r['memory_gb']:.2f}",
            f"{r['ppl_q50']:.3f}",
            f"[{r['ppl_q05']:.3f}, {r['ppl_q95']:.3f}]",
            f"{r['p_best']:.2f}",
        )
        for flag in FLAGS:
            if r[flag]:
                what = flag.removeprefix("new_").replace("_", " ")
                names = unseen.setdefault(what, [])
                value = {"method": r["method"], "eval set": r["eval_set"]}.get(what, r["family"])
                if value not in names:
                    names.append(value)
    Console().print(t)
    click.echo(
        "P(best): share of posterior draws in which the option has the lowest mean perplexity of all "
        "options within the budget."
    )
    for what, names in unseen.items():
        click.echo(
            f"{what} unseen by the fit ({', '.join(names)}): predicted from the fitted population, with wider intervals"
        )


def _print_accuracy(ranked, budget_gb: float, n_within: int, task: str, *, own_method: frozenset[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Best options within {budget_gb:g} GB by accuracy on {task} ({n_within} fit)")
    for c in ("rank", "option", "memory GB", "acc % median", "90% interval", "P(best)", "ppl median"):
        t.add_column(c, justify="left" if c == "option" else "right")
    for r in ranked.iter_rows(named=True):
        measured = r["method"] == "fp16"
        t.add_row(
            str(r["acc_rank"]),
            _label(r, own_method),
            f"{r['memory_gb']:.2f}",
            f"{r['acc_q50']:.1f}",
            "measured" if measured else f"[{r['acc_q05']:.1f}, {r['acc_q95']:.1f}]",
            f"{r['acc_p_best']:.2f}",
            f"{r['ppl_q50']:.3f}",
        )
    Console().print(t)
    click.echo(
        f"P(best): share of posterior draws in which the option has the highest expected accuracy on {task} of all "
        "options within the budget; intervals include the task's measurement noise."
    )
