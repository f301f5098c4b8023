"""``qbayes predict``: posterior-predictive quantized perplexity for new configurations."""

from __future__ import annotations

from pathlib import Path

import click

from qbayes.cli.accuracy import accuracy_options, check_task_flags, load_accuracy
from qbayes.cli.options import fit_option, load_fit, load_observed, new_level_option, observed_option
from qbayes.errors import QBayesError

SUFFIXES = (".csv", ".parquet")


def _read_queries(path: Path):
    import polars as pl

    if not path.is_file():
        raise QBayesError(f"{path}: no such query file")
    if path.suffix not in SUFFIXES:
        raise QBayesError(f"{path}: query file must end in .csv or .parquet")
    try:
        if path.suffix == ".csv":
            return pl.read_csv(path, infer_schema=False, null_values=[""])
        return pl.read_parquet(path)
    except Exception as exc:
        raise QBayesError(f"{path}: cannot read queries ({type(exc).__name__}: {exc})") from exc


def _write_atomic(df, path: Path) -> None:
    from qbayes.atomic import atomic_path

    with atomic_path(path) as tmp:
        df.write_csv(tmp) if path.suffix == ".csv" else df.write_parquet(tmp)


@click.command()
@fit_option
@click.option("--input", "input_path", type=click.Path(), help="queries, .csv or .parquet")
@click.option(
    "--output",
    "output_path",
    type=click.Path(),
    help="predictions, .csv or .parquet; '-': CSV on stdout  [default: a table on stdout]",
)
@click.option("--family")
@click.option("--model", "model_name", help="model name (default: FAMILY-<params>B)")
@click.option("--params-b", type=float, help="parameters, billions")
@click.option("--train-tokens-b", type=float, help="training tokens, billions (omit if unknown)")
@click.option(
    "--vocab-size",
    type=int,
    help="vocabulary size, tokens: anchors a collapse model's collapse level (default: the family's, "
    "else drawn from known families' sizes)",
)
@click.option(
    "--arch",
    help="block design, norm+mlp, e.g. rmsnorm+swiglu for LLaMA-style models "
    "(default: the family's, if the fit saw it)",
)
@click.option(
    "--format",
    "format_name",
    help="a format by name: a llama.cpp type (Q4_K_M, IQ2_XS, Q8_0, ...), nf4, fp8, mxfp4, or a label "
    "such as int4-g128, w4a16-g128 (see docs/formats.md); sets bits, group size and kind",
)
@click.option("--method", help="quantization method, e.g. GPTQ, AWQ, RTN (with a --format label: default RTN)")
@click.option("--w-bits", type=float, help="weight bits")
@click.option("--group-size", type=int, help="group size (omit, or -1, for per-channel)")
@click.option("--act-bits", type=float, help="activation bits  [default: 16, or as the format says]")
@click.option("--w-kind", help="int, fp, nf, mx, kquant, mixed  [default: int, or the format's]")
@click.option("--eval-set", default="wikitext2", show_default=True)
@click.option("--fp16-ppl", type=float, help="unquantized perplexity on the evaluation set")
@new_level_option
@accuracy_options
@click.option("--draws", type=click.IntRange(50), default=1000, show_default=True, help="posterior draws used")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--quantile",
    "quantiles",
    multiple=True,
    type=click.FloatRange(0.01, 0.99),
    help="a perplexity quantile to write, in whole percents, as ppl_qNN (repeatable: --quantile 0.1 "
    "--quantile 0.9)  [default: 0.05, 0.25, 0.5, 0.75, 0.95]",
)
@observed_option
def predict(
    fit_path,
    input_path,
    output_path,
    family,
    model_name,
    params_b,
    train_tokens_b,
    vocab_size,
    arch,
    format_name,
    method,
    w_bits,
    group_size,
    act_bits,
    w_kind,
    eval_set,
    fp16_ppl,
    new_level,
    task,
    fp16_acc,
    accuracy_fit_path,
    draws,
    seed,
    quantiles,
    observed_path,
):
    """Predict quantized perplexity with intervals, from a file of queries or one query given by flags.

    With a task (--task and --fp16-acc, or columns task and fp16_acc) the predicted accuracy
    on it too (acc_q05 ... acc_q95, acc_mean, percent)."""
    import polars as pl

    from qbayes.api.predict import predict_table
    from qbayes.db.named_formats import COLUMN as FORMAT
    from qbayes.model.predict import OUTPUT_COLUMNS, QUANTILES, Predictor

    out = None if output_path in (None, "-") else Path(output_path)
    if out is not None and out.suffix not in SUFFIXES:
        raise QBayesError(f"{out}: output must end in .csv or .parquet ('-': CSV on stdout)")
    if input_path:
        raw = _read_queries(Path(input_path))
        where = str(input_path)
    else:
        needed = (("family", family), ("params_b", params_b), ("fp16_ppl", fp16_ppl))
        if format_name is None:
            needed += (("method", method), ("w_bits", w_bits))
        missing = [f"--{n.replace('_', '-')}" for n, v in needed if v is None]
        if missing:
            raise QBayesError(
                f"give --input/--output, or a single query with {', '.join(missing)}"
                + ("" if format_name else " (or --format instead of --method and --w-bits)")
            )
        raw = pl.DataFrame(
            {
                "family": [family],
                "model": [model_name or f"{family}-{params_b:g}B"],
                "params_b": [params_b],
                "train_tokens_b": [train_tokens_b],
                "vocab_size": [vocab_size],
                "arch": [arch],
                "format": [format_name],
                "method": [method],
                "w_bits": [w_bits],
                "group_size": [group_size],
                "act_bits": [act_bits if act_bits is not None or format_name else 16.0],
                "w_kind": [w_kind or (None if format_name else "int")],
                "eval_set": [eval_set],
                "fp16_ppl": [fp16_ppl],
                **({"task": [task], "fp16_acc": [fp16_acc]} if task is not None else {}),
            },
            schema_overrides={
                "train_tokens_b": pl.Float64,
                "vocab_size": pl.Float64,
                "arch": pl.String,
                "format": pl.String,
                "method": pl.String,
                "w_bits": pl.Float64,
                "group_size": pl.Int64,
                "act_bits": pl.Float64,
                "w_kind": pl.String,
            },
        )
        where = "query"
        check_task_flags(task, fp16_acc)
    fit = load_fit(fit_path)
    observed = load_observed(observed_path)

    def accuracy(p):
        return load_accuracy(accuracy_fit_path, draws=draws, seed=seed, ppl_fit=p.fit)

    run = predict_table(
        Predictor(fit, n_draws=draws, seed=seed),
        raw,
        where=where,
        new_level=new_level,
        observed=observed,
        accuracy=accuracy,
        quantiles=quantiles or QUANTILES,
    )
    for line in run.notes:
        click.echo(line, err=True)
    result, pred, flags, named, fitted = run.table, run.pred, run.flags, run.named, run.fitted
    if output_path == "-":
        click.echo(result.write_csv(), nl=False)
    elif out is None and not input_path:
        # the written row, plus what only the screen shows (a collapse model's predictive given no collapse)
        _print_one({**pred.row(0, named=True), **result.row(0, named=True)}, fitted)
    elif out is None:
        shown = pl.concat([pred, flags], how="horizontal").with_columns(
            named if named is not None else pl.lit(None, pl.String).alias(FORMAT),
            pl.col("bits").alias("bits_per_weight"),
        )
        _print_many(shown)
    else:
        _write_atomic(result, out)
        flagged = {c: int(result[c].sum()) for c in OUTPUT_COLUMNS if c.startswith("new_")}
        click.echo(f"wrote {result.height} predictions to {out}; rows with unseen levels: {flagged}")


def _print_many(result) -> None:
    """Predictions of a query file as a table on stdout: one row per query."""
    from rich.console import Console
    from rich.table import Table

    from qbayes.model.extrapolation import OUTSIDE
    from qbayes.model.predict import NEW_LEVEL_FLAGS

    t = Table(title=f"{result.height} predictions (--output FILE writes every column)")
    collapse = result.get_column("p_collapse").null_count() < result.height
    columns = ("model", "configuration", "eval set", *(["P(collapse)"] if collapse else []), "ppl median")
    for c in (*columns, "90% interval", "notes"):
        t.add_column(c, justify="left" if c in ("model", "configuration", "notes") else "right", overflow="fold")
    for r in result.iter_rows(named=True):
        notes = [f"new {n.removeprefix('new_').replace('_', ' ')}" for n in NEW_LEVEL_FLAGS.values() if r[n]]
        notes += [f"outside fitted {what}" for flag, what in OUTSIDE.items() if r[flag]]
        t.add_row(
            r["model"],
            _configuration(r),
            r["eval_set"],
            *([f"{r['p_collapse']:.2f}"] if collapse else []),
            f"{r['ppl_q50']:.4g}",
            f"[{r['ppl_q05']:.4g}, {r['ppl_q95']:.4g}]",
            ", ".join(notes),
        )
    Console(width=max(120, Console().width)).print(t)


def _configuration(r: dict) -> str:
    group = "" if r["group_size"] is None else f" g{r['group_size']}"
    config = f"{r['method']} w{r['w_bits']:g}{group} a{r['act_bits']:g}"
    if r.get("format"):
        config = f"{r['format']} ({config}, {r['bits_per_weight']:.2f} bits per weight)"
    return config


def _print_one(r: dict, fitted) -> None:
    from rich.console import Console
    from rich.table import Table

    from qbayes.model.extrapolation import describe as describe_outside

    t = Table(title=f"{r['model']}: {_configuration(r)} on {r['eval_set']}")
    for c in ("", "5%", "25%", "median", "75%", "95%"):
        t.add_column(c, justify="right")
    t.add_row("perplexity", *(f"{r[k]:.3f}" for k in ("ppl_q05", "ppl_q25", "ppl_q50", "ppl_q75", "ppl_q95")))
    if r.get("acc_q50") is not None:
        acc = ("acc_q05", "acc_q25", "acc_q50", "acc_q75", "acc_q95")
        t.add_row(f"{r['task']} accuracy %", *(f"{r[k]:.1f}" for k in acc))
    Console().print(t)
    notes = [
        n.replace("_", " ")
        for n in ("new_family", "new_arch", "new_method", "new_eval_set", "new_w_kind", "new_format")
        if r[n]
    ]
    if r["tokens_imputed"]:
        notes.append("training tokens imputed from the fitted population")
    click.echo(f"fp16 perplexity {r['fp16_ppl']:g}; median degradation {r['delta_q50']:.4f} nats/token")
    line = collapse_line(r)
    if line:
        click.echo(line)
    if r.get("acc_q50") is not None:
        click.echo(
            f"fp16 accuracy on {r['task']} {r['fp16_acc']:g}%; median loss {r['fp16_acc'] - r['acc_q50']:.1f} points "
            "(the interval includes the task's own measurement noise)"
        )
    click.echo(
        "(the mean perplexity, ppl_mean in file output, is dominated by rare collapses in the "
        "upper tail; the median and interval are the figures to read)"
    )
    if notes:
        click.echo("predicted from the population (wider intervals): " + ", ".join(notes))
    for line in filled_notes(r):
        click.echo(line)
    for line in describe_outside(fitted, r):
        click.echo(line)
    if r["new_arch"] and r["block_design"] is None:
        click.echo(
            f"block design of {r['family']} unknown, so it is predicted as a new design; give --arch "
            "(norm+mlp, e.g. rmsnorm+swiglu) if you know it"
        )
    if r["tokens_imputed"]:
        click.echo(f"training tokens of {r['model']} unknown; give --train-tokens-b if you know them")


def collapse_line(r: dict) -> str | None:
    """For a model with a collapse regime: "P(collapse) 0.35; if it does not collapse:
    perplexity median ... [90% ...]", or "P(collapse) below 0.01" where the table above is
    already the answer without a collapse; None for other models."""
    if r.get("p_collapse") is None or r.get("ppl_hold_q50") is None:
        return None
    if r["p_collapse"] < 0.01:
        return "P(collapse) below 0.01"
    return (
        f"P(collapse) {r['p_collapse']:.2f}; if it does not collapse: perplexity median {r['ppl_hold_q50']:.3f} "
        f"[90% {r['ppl_hold_q05']:.3f}, {r['ppl_hold_q95']:.3f}]"
    )


def filled_notes(r: dict) -> list[str]:
    """What a prediction row took from its family rather than from the query: the block
    design from the table of known families, training tokens from the fit or the table."""
    table = "from qbayes's table of known families (data/known_families.csv)"
    out = []
    if r["block_design_from"] == "known_families":
        out.append(f"block design {r['block_design']}: {r['family']}'s, {table}; --arch overrides it")
    where = {"fit": "as the fit saw them (geometric mean over its models)", "known_families": table}
    if r["train_tokens_from"] in where:
        out.append(
            f"training tokens {r['train_tokens_b_used']:g}B: {r['family']}'s, "
            f"{where[r['train_tokens_from']]}; --train-tokens-b overrides them"
        )
    return out
