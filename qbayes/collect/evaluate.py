"""Negative log-likelihood, perplexity, KL divergence and decode speed.

The evaluation protocol: a text is cut into non-overlapping windows of ``seq_len`` tokens
(:mod:`qbayes.collect.protocol` says which windows); every window is scored on its own
(no context carried over), predicting tokens 2..seq_len. The NLL is the mean over all
predicted tokens (nats/token), its standard error is taken over windows (tokens within a
window are not independent), and ``ppl = exp(nll)``.

Given a ``reference`` model (the unquantized one), the same positions are also scored
for the KL divergence of the model's next-token distribution Q from the reference's P,
``KL(P || Q) = sum_v P(v) (ln P(v) - ln Q(v))`` per token, summarised as llama.cpp's
``perplexity --kl-divergence`` reports it: the mean over tokens with its standard error
``sqrt((mean(kl^2) - mean(kl)^2) / (n - 1))``, the 99th percentile (linear
interpolation) and the share of tokens whose most likely next token is the same under
both models. (llama.cpp scores the second half of each window only; here every predicted
position counts, the same positions as the NLL.) The sum is taken in float64, and a
token's KL is clipped at 0, its lower bound, so rounding cannot make it negative.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

KL_CHUNK = 512  # positions per float64 KL computation (bounds memory at large vocabularies)


@dataclass(frozen=True)
class KLStats:
    """KL divergence from the reference model, per predicted token."""

    mean: float
    se: float
    p99: float
    top1_agree: float  # share of tokens with the same most likely next token
    tokens: int


@dataclass(frozen=True)
class EvalResult:
    nll: float
    nll_se: float
    eval_tokens: int  # predicted tokens
    seq_len: int
    per_window: tuple[float, ...]
    kl: KLStats | None = None

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def windows(self) -> int:
        return len(self.per_window)


def make_windows(ids: list[int], seq_len: int) -> torch.Tensor:
    """``[n_windows, seq_len]`` token ids; the tail that does not fill a window is dropped."""
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"{len(ids)} tokens do not fill one window of {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def window_nll(
    model: torch.nn.Module, windows: torch.Tensor, batch_size: int, reference: torch.nn.Module | None = None
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Mean NLL of each window (nats/token), as a float64 CPU tensor; with a reference
    model, also each predicted token's KL divergence from it and whether the two models'
    most likely next tokens agree (flat float64 and bool CPU tensors).

    Every window is scored on its own, so no KV cache is kept (``use_cache=False``); the
    logits stay in the model's dtype, and only ``KL_CHUNK`` positions at a time are
    turned into float32 (NLL) or float64 (KL), which bounds the copies at large
    vocabularies."""
    device = input_device(model)
    out, kls, agree = [], [], []
    with torch.no_grad():
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            targets = batch[:, 1:].to(logits.device)
            out.append(torch.stack([row_nll(row[:-1], t) for row, t in zip(logits, targets, strict=True)]))
            if reference is not None:
                ref = reference(input_ids=batch.to(input_device(reference)), use_cache=False).logits
                for q_row, p_row in zip(logits[:, :-1], ref[:, :-1], strict=True):
                    kl, same = token_kl(p_row.to(q_row.device), q_row)
                    kls.append(kl)
                    agree.append(same)
                del ref
            del logits
    per_token = (torch.cat(kls), torch.cat(agree)) if reference is not None else None
    return torch.cat(out), per_token


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model takes its input ids: its input embedding's device (the first of a
    model spread over several devices)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embed is not None and getattr(embed, "weight", None) is not None:
        return embed.weight.device
    return next(model.parameters()).device


def row_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL of one window's ``[positions, vocab]`` logits (float64 on the CPU), in
    float32 chunks of ``KL_CHUNK`` positions."""
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    for lg, tg in zip(logits.split(KL_CHUNK), targets.split(KL_CHUNK), strict=True):
        total += torch.nn.functional.cross_entropy(lg.float(), tg, reduction="sum").double()
    return (total / targets.numel()).cpu()


def token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P || Q) per position of ``[positions, vocab]`` logits (float64, clipped at 0) and
    whether the argmax agrees, on the CPU."""
    kl, same = [], []
    for p_chunk, q_chunk in zip(p_logits.split(KL_CHUNK), q_logits.split(KL_CHUNK)):
        lp = torch.log_softmax(p_chunk.double(), dim=-1)
        lq = torch.log_softmax(q_chunk.double(), dim=-1)
        kl.append((lp.exp() * (lp - lq)).sum(dim=-1).clamp_min(0.0).cpu())
        same.append((p_chunk.argmax(dim=-1) == q_chunk.argmax(dim=-1)).cpu())
    return torch.cat(kl), torch.cat(same)


def kl_stats(kl: torch.Tensor, same: torch.Tensor) -> KLStats:
    """llama.cpp's summary of per-token KL divergences (see the module docstring)."""
    values = kl.numpy()
    n = values.size
    mean = float(values.mean())
    var = float((values * values).mean()) - mean * mean
    se = math.sqrt(var / (n - 1)) if n > 1 and var > 0 else 0.0
    return KLStats(mean, se, float(np.percentile(values, 99.0)), float(same.double().mean()), int(n))


def evaluate(
    model: torch.nn.Module, windows: torch.Tensor, batch_size: int, *, reference: torch.nn.Module | None = None
) -> EvalResult:
    """NLL of ``model`` on ``windows``; with ``reference``, its KL divergence from it too."""
    per, per_token = window_nll(model, windows, batch_size, reference)
    n = per.numel()
    se = float(per.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
    nll = float(per.mean())
    if not math.isfinite(nll):
        raise FloatingPointError(f"non-finite NLL ({nll}): the model's outputs overflowed")
    kl = kl_stats(*per_token) if per_token is not None else None
    if kl is not None and not math.isfinite(kl.mean):
        raise FloatingPointError(f"non-finite KL divergence ({kl.mean}): the model's outputs overflowed")
    return EvalResult(nll, se, n * (windows.shape[1] - 1), int(windows.shape[1]), tuple(per.tolist()), kl)


def decode_tokens_per_s(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> float:
    """Greedy decoding speed with the KV cache, tokens per second (one warm-up run)."""
    device = input_device(model)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    return new_tokens / elapsed
