"""Train every run of a recipe, one process per run (``jobs`` at a time), with a progress
bar over tokens; then write ``manifest.csv``, the list of checkpoints that ``qbayes
collect --models`` reads.

Runs whose checkpoints already exist for this recipe are skipped, so an interrupted
``qbayes zoo train`` picks up where it stopped (an unfinished run restarts from scratch;
it is deterministic, so the result is the same).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue as queue_mod
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from qbayes.collect import manifest
from qbayes.collect.modelio import TRAIN_INFO
from qbayes.zoo.corpus import prepare
from qbayes.zoo.recipe import Recipe, Run
from qbayes.zoo.train import is_done, train_run

MANIFEST = "manifest.csv"


@dataclass
class TrainSummary:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    manifest: Path | None = None


def train_all(
    recipe: Recipe,
    out: str | Path,
    *,
    device: str = "cpu",
    jobs: int = 1,
    only: tuple[str, ...] = (),
    progress: bool = True,
    console: Console | None = None,
) -> TrainSummary:
    out = Path(out)
    console = console or Console(stderr=True)
    runs = [r for r in recipe.runs() if not only or r.name in only]
    summary = TrainSummary()
    prepare(recipe.corpus, out / "corpus")  # once, before the workers read it
    todo = []
    for run in runs:
        (summary.skipped if is_done(recipe, run, out) else todo).append(run)
    summary.skipped = [r.name for r in summary.skipped]
    total = len(todo) * recipe.training.budget_steps()[-1] * recipe.training.tokens_per_step
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(f"zoo: {len(todo)} run(s), tokens", total=total)
        if todo:
            _run_pool(recipe, todo, out, device, max(1, jobs), bar, task, summary, console)
    summary.manifest = write_manifest(out)
    return summary


def _run_pool(recipe, todo, out, device, jobs, bar, task, summary, console) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        events = manager.Queue()
        futures = {pool.submit(_worker, recipe, run, out, device, events): run for run in todo}
        seen: dict[str, int] = {}
        pending = set(futures)
        while pending:
            _drain(events, seen, bar, task)
            for fut in [f for f in pending if f.done()]:
                pending.discard(fut)
                run = futures[fut]
                error = fut.exception()
                if error is None:
                    summary.trained.append(run.name)
                    infos = fut.result()
                    console.print(
                        f"  {run.name}: {len(infos)} checkpoints, final loss "
                        f"{infos[-1]['train_loss']:.3f}, {infos[-1]['train_s']:.0f} s",
                        highlight=False,
                    )
                else:
                    summary.failed.append(f"{run.name}: {type(error).__name__}: {error}")
                    console.print(f"  [red]failed[/red] {run.name}: {error}", highlight=False)
        _drain(events, seen, bar, task)


def _drain(events, seen: dict[str, int], bar, task) -> None:
    try:
        while True:
            name, tokens = events.get(timeout=0.2)
            bar.advance(task, tokens - seen.get(name, 0))
            seen[name] = tokens
    except queue_mod.Empty:
        pass


def _worker(recipe: Recipe, run: Run, out: Path, device: str, events) -> list[dict]:
    torch.set_num_threads(1)
    corpus = prepare(recipe.corpus, out / "corpus")
    last = [0]

    def on_step(name: str, tokens: int) -> None:
        if tokens - last[0] >= 20 * recipe.training.tokens_per_step:
            events.put((name, tokens))
            last[0] = tokens

    try:
        infos = train_run(recipe, run, corpus, out, device=device, on_step=on_step)
    except Exception as exc:  # the parent reports it; keep the traceback's tail in the message
        raise RuntimeError(f"{exc}\n{traceback.format_exc()[-1500:]}") from None
    events.put((run.name, infos[-1]["train_tokens"]))
    return infos


def write_manifest(out: str | Path) -> Path:
    """``out/manifest.csv`` listing every checkpoint under ``out`` (paths relative to it),
    with the training card's main figures as extra columns."""
    out = Path(out)
    cards = [(p.parent, json.loads(p.read_text())) for p in out.glob(f"*/*/{TRAIN_INFO}")]
    cards.sort(key=lambda c: (c[1]["arch"], c[1]["size"]["name"], c[1]["train_tokens"]))
    entries = [manifest.ModelEntry(d.relative_to(out), info["family"], info["model"]) for d, info in cards]
    extra = [
        {
            "arch": info["arch"],
            "size": info["size"]["name"],
            "params": info["params"],
            "non_embedding_params": info["non_embedding_params"],
            "train_tokens": info["train_tokens"],
            "tokens_per_param": round(info["train_tokens"] / info["non_embedding_params"], 4),
            "train_loss": round(info["train_loss"], 5),
            "seed": info["seed"],
            "content_sha256": info["content_sha256"],
        }
        for _, info in cards
    ]
    return manifest.write_manifest(out / MANIFEST, entries, extra=extra)
