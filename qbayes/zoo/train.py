"""Train one zoo run (an architecture at a size) and save a checkpoint at every budget.

A run draws random ``seq_len`` windows from the tokenized corpus with its own seeded
generator, takes AdamW steps with a linear warm-up and an inverse-square-root decay,
and after the step that completes each token budget saves a Hugging Face checkpoint:
``config.json``, ``model.safetensors``, the shared tokenizer, and ``qbayes_train.json``
(architecture, size, parameter counts, tokens seen, seed, recipe digest, mean training
loss, content hash, versions). Training is single-threaded and deterministic: the same
recipe, seed and device give bit-identical weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import torch

from qbayes.atomic import atomic_dir
from qbayes.collect.modelio import TRAIN_INFO, param_counts
from qbayes.collect.toymodels import ToySpec, build_model
from qbayes.zoo.corpus import Corpus
from qbayes.zoo.recipe import Recipe, Run, checkpoint_name


def run_seed(recipe: Recipe, run: Run) -> int:
    """A seed per run, stable across recipe edits that do not touch this run."""
    return (recipe.seed + zlib.crc32(run.name.encode())) % 2**31


def checkpoint_dir(out: Path, run: Run, budget_m: float) -> Path:
    return Path(out) / run.name / f"t{budget_m:g}M"


def is_done(recipe: Recipe, run: Run, out: Path) -> bool:
    """Every checkpoint of the run exists and was made by this recipe."""
    for budget in recipe.training.budgets_m:
        info = checkpoint_dir(out, run, budget) / TRAIN_INFO
        if not info.is_file() or json.loads(info.read_text()).get("recipe_digest") != recipe.digest():
            return False
    return True


def lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then sqrt(warmup / step)."""
    step = step + 1
    return step / warmup if step <= warmup else math.sqrt(warmup / step)


def train_run(
    recipe: Recipe, run: Run, corpus: Corpus, out: str | Path, *, device: str = "cpu", on_step=None
) -> list[dict]:
    """Train ``run`` from scratch; returns the checkpoints' training info.

    ``on_step(run_name, tokens_done)`` is called after every optimizer step (progress)."""
    import transformers

    tr = recipe.training
    seed = run_seed(recipe, run)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    spec = ToySpec(
        run.arch,
        hidden=run.size.hidden,
        layers=run.size.layers,
        heads=run.size.heads,
        intermediate=run.size.intermediate,
        vocab=recipe.corpus.vocab,
        max_positions=tr.seq_len,
    )
    model = build_model(spec).to(device)
    total, non_embed = param_counts(model)
    data = torch.from_numpy(corpus.ids.astype("int64"))
    if data.numel() <= tr.seq_len + 1:
        raise ValueError("the training corpus is shorter than one sequence")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tr.warmup_steps))
    offsets = torch.arange(tr.seq_len)
    saves = dict(zip(tr.budget_steps(), tr.budgets_m))
    losses: list[float] = []
    infos = []
    t0 = time.perf_counter()
    model.train()
    for step in range(1, max(saves) + 1):
        starts = torch.randint(0, data.numel() - tr.seq_len, (tr.batch_size,), generator=gen)
        x = data[starts[:, None] + offsets].to(device)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(run.name, step * tr.tokens_per_step)
        if step in saves:
            budget = saves[step]
            info = {
                "model": checkpoint_name(run, budget),
                "family": run.family,
                "arch": run.arch,
                "size": asdict(run.size),
                "params": total,
                "non_embedding_params": non_embed,
                "train_tokens": step * tr.tokens_per_step,
                "budget_m": budget,
                "steps": step,
                "seed": seed,
                "recipe": recipe.name,
                "recipe_digest": recipe.digest(),
                "corpus_sha256": corpus.digest,
                "vocab": recipe.corpus.vocab,
                "train_loss": sum(losses[-tr.loss_window :]) / len(losses[-tr.loss_window :]),
                "lr": sched.get_last_lr()[0],
                "train_s": round(time.perf_counter() - t0, 2),
                "device": device,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            }
            info["content_sha256"] = _save(model, corpus, info, checkpoint_dir(out, run, budget))
            infos.append(info)
            model.train()
    return infos


def _save(model: torch.nn.Module, corpus: Corpus, info: dict, target: Path) -> str:
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        for f in corpus.tokenizer_dir.iterdir():
            shutil.copy2(f, tmp / f.name)
        digest = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
        (tmp / TRAIN_INFO).write_text(json.dumps({**info, "content_sha256": digest}, indent=2))
    return digest
