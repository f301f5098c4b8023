"""``qbayes collect``: measure a local model under a grid of quantization configurations.

Collection needs the ``collect`` extra (torch, transformers, the backends). Without it
the command still loads and says what to install.

Exit status: 0 when every configuration ran (or was already in the shard) and the shard
holds result rows for the models; 2 when the preflight refuses the run (nothing is
loaded or written) or the input is otherwise unusable; 1 when any configuration or task
failed (what succeeded is saved, the failures are listed) or no result row exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from qbayes.collect.executors.base import offline_environment, quiet_transformers
from qbayes.errors import QBayesError
from qbayes.resources import collectors_dir

INSTALL = "pip install torch==2.13.0 && pip install -e '.[collect]'"


def resolve_grid(value: str) -> Path:
    """A grid file path, or a grid name looked up in ./collectors and the shipped grids
    (the repository's collectors/)."""
    p = Path(value)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise QBayesError(f"{p}: no such grid file")
        return p
    roots = [root for root in (Path.cwd() / "collectors", collectors_dir()) if root is not None]
    for root in roots:
        candidate = root / f"{value}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({f.stem for root in roots if root.is_dir() for f in root.glob("*.toml")})
    from qbayes.errors import unknown

    raise unknown("grid", value, known)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    """Option values given repeatedly and/or comma-separated."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@click.command("collect")
@click.option(
    "--model",
    "model_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Directory of a causal LM saved with save_pretrained (no hub downloads); repeat for several.",
)
@click.option("--family", default=None, help="Model family of the --model models, recorded in the models table.")
@click.option(
    "--name", default=None, help="Model name in the database (default: the directory name); one --model only."
)
@click.option(
    "--models",
    "manifest",
    default=None,
    type=click.Path(path_type=Path),
    help="Manifest CSV of models to collect: columns path,family[,name]; relative paths are relative to the file.",
)
@click.option(
    "--grid", "grid", default="default", show_default=True, help="Grid file, or a name in collectors/ (e.g. tiny)."
)
@click.option("--methods", multiple=True, help="Only these methods (repeat or comma-separate).")
@click.option("--formats", multiple=True, help="Use these formats for every selected method (e.g. int4-g128).")
@click.option(
    "--calib", multiple=True, help="Calibration sets (c4, wikitext2, pile, shakespeare, bible, pystdlib, noise)."
)
@click.option(
    "--eval", "evals", multiple=True, help="Evaluation sets (wikitext2, c4, ptb, shakespeare, bible, pystdlib)."
)
@click.option(
    "--eval-text",
    "eval_texts",
    multiple=True,
    metavar="NAME=PATH",
    help="Read evaluation set NAME (wikitext2, c4, ptb) from a local parquet, JSON lines or text file, "
    "or a saved dataset directory; adds NAME to the evaluation sets. Repeatable.",
)
@click.option(
    "--calib-text",
    "calib_texts",
    multiple=True,
    metavar="NAME=PATH",
    help="Read calibration set NAME (c4, wikitext2, pile) from a local file or saved dataset; adds it "
    "to the calibration sets. Repeatable.",
)
@click.option(
    "--tasks",
    multiple=True,
    help="lm-evaluation-harness tasks to score every model on (e.g. arc_easy,piqa), replacing the grid's "
    "[tasks] names; rows go to the accuracy table. Repeat or comma-separate.",
)
@click.option(
    "--task-include",
    "task_include",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Directory of local lm-eval task YAML files (lm-eval's include_path), for --tasks. Repeatable.",
)
@click.option(
    "--download",
    is_flag=True,
    help="Fetch the hub files of wikitext2, c4 and ptb that are not in the local Hugging Face cache "
    "(otherwise nothing is fetched).",
)
@click.option(
    "--seq-len", type=int, default=None, help="Evaluation and calibration sequence length, replacing the grid's."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Shard directory to write.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Recompute configurations already in the shard.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar.")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where to run: local (this process, model after model) or ray (tasks on a Ray cluster).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster address, e.g. 10.0.0.1:6379 (ray executor; default: RAY_ADDRESS, a cluster "
    "started on this machine, else a new local one).",
)
@click.option(
    "--retries",
    type=int,
    default=None,
    help="Retries of a Ray task that fails or whose worker dies (ray executor; default 2).",
)
def collect(
    model_paths,
    family,
    name,
    manifest,
    grid,
    methods,
    formats,
    calib,
    evals,
    eval_texts,
    calib_texts,
    tasks,
    task_include,
    download,
    seq_len,
    out,
    device,
    seed,
    force,
    progress,
    executor,
    address,
    retries,
):
    """Quantize models under every configuration of a grid and write database rows.

    Writes baseline and quantized NLL/perplexity, SQNR, weight bytes and decode speed to
    the results table, loss-landscape and outlier features to the features table, and
    every configuration that could not run, with the reason, to the failures table. A
    rerun skips what the shard already holds (use --force to recompute).

    Models: --model DIR (repeatable, all of --family) and/or --models manifest.csv.
    Executors: local runs here; ray splits the work into one task per model and
    method (plus baseline and feature tasks), runs them on a Ray cluster (--address)
    with --retries retries, and merges each task's shard into --out as it finishes.

    Texts: the built-in texts, and WikiText-2, C4 and PTB under the GPTQ protocol, read
    from local files (--eval-text/--calib-text) or the Hugging Face cache, fetched only
    with --download. Quantized rows carry their KL divergence from the unquantized model.

    Tasks: --tasks arc_easy,piqa (or the grid's [tasks] names) scores the unquantized and
    every quantized model through lm-evaluation-harness, on the model in memory, into the
    accuracy table (percent, standard error, task and harness versions). Local task files
    come from --task-include DIR; hub tasks need their data in the Hugging Face cache.

    Before any model is loaded, a preflight checks every model directory, method, format,
    device, text and package the run needs, and refuses (exit 2, nothing written) with
    what is missing. A run where any configuration failed exits 1 after saving the rest.

    Methods: rtn (reference round-to-nearest), quanto (optimum-quanto), gptq and awq
    (llm-compressor), autoawq (CUDA only). Formats: intB[-gG][-asym] (B 2-8), fp8[-gG],
    nf4[-gG], mxint8, mxint4, mxfp4. Grids: collectors/default.toml, collectors/tiny.toml,
    collectors/gptq-protocol.toml (WikiText-2 and C4 at 2048 tokens). See docs/collect.md.
    """
    from qbayes.collect import executors
    from qbayes.collect.manifest import model_entries

    runner = executors.make(executor, address=address, retries=retries)
    models = model_entries(models=model_paths, family=family, name=name, manifest=manifest)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        raise QBayesError(f"qbayes collect needs torch and transformers; install the collect extra: {INSTALL}")
    offline_environment()

    from rich.console import Console

    from qbayes.collect.corpora import parse_text_option
    from qbayes.collect.grid import load_grid
    from qbayes.collect.preflight import preflight
    from qbayes.db.schema import CALIB_SETS, EVAL_SETS

    files = tuple(parse_text_option(v, "eval", EVAL_SETS) for v in eval_texts) + tuple(
        parse_text_option(v, "calib", CALIB_SETS) for v in calib_texts
    )
    g = load_grid(resolve_grid(grid)).select(
        methods=_names(methods),
        formats=_names(formats),
        calib=_names(calib),
        evals=_names(evals),
        text_files=files,
        seq_len=seq_len,
        tasks=_names(tasks),
        task_include=task_include,
    )
    quiet_transformers()
    console = Console(stderr=True, soft_wrap=True)
    request = preflight(
        executors.CollectRequest(
            models=models, grid=g, out=out, device=device, seed=seed, force=force, progress=progress
        ),
        download=download,
        remote=runner.name == "ray",
    )
    outcome = runner.run(request, console)
    for line in outcome.lines:
        click.echo(line)
    for line in outcome.failures:
        click.echo(f"  failed: {line}")
    if outcome.lost:
        click.echo(
            f"{outcome.lost} task(s) did not complete; their rows are missing from {out}. Rerun the same "
            "command (after fixing the causes above) to run them: completed tasks are not run again.",
            err=True,
        )
        raise SystemExit(1)
    if outcome.failures:
        click.echo(
            f"{len(outcome.failures)} configuration(s) failed (listed above, and in {out}/failures.parquet); "
            "what succeeded is saved. A rerun after fixing the causes runs only what is missing.",
            err=True,
        )
        raise SystemExit(1)
    rows = _result_rows(out, [m.name for m in models])
    if rows == 0:
        click.echo(f"no result row was written to {out}: nothing was measured", err=True)
        raise SystemExit(1)


def _result_rows(out: Path, models: list[str]) -> int:
    """Result rows in the shard ``out`` for ``models``."""
    import polars as pl

    from qbayes.db import store

    if not Path(out).is_dir() or not (Path(out) / "results.parquet").exists():
        return 0
    return store.load(out).results.filter(pl.col("model").is_in(models)).height
