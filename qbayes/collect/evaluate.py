"""Negative log-likelihood, perplexity and decode speed.

The evaluation protocol: the first ``tokens`` tokens of a text's evaluation part are cut
into non-overlapping windows of ``seq_len`` tokens; every window is scored on its own
(no context carried over), predicting tokens 2..seq_len. The NLL is the mean over all
predicted tokens (nats/token), its standard error is taken over windows (tokens within a
window are not independent), and ``ppl = exp(nll)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EvalResult:
    nll: float
    nll_se: float
    eval_tokens: int  # predicted tokens
    seq_len: int
    per_window: tuple[float, ...]

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)


def make_windows(ids: list[int], seq_len: int) -> torch.Tensor:
    """``[n_windows, seq_len]`` token ids; the tail that does not fill a window is dropped."""
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"{len(ids)} tokens do not fill one window of {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def window_nll(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean NLL of each window (nats/token), as a float64 CPU tensor."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            logits = model(input_ids=batch).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
            ).view(batch.shape[0], -1)
            out.append(nll.mean(dim=1).double().cpu())
    return torch.cat(out)


def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> EvalResult:
    per = window_nll(model, windows, batch_size)
    n = per.numel()
    se = float(per.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0
    nll = float(per.mean())
    if not math.isfinite(nll):
        raise FloatingPointError(f"non-finite NLL ({nll}): the model's outputs overflowed")
    return EvalResult(nll, se, n * (windows.shape[1] - 1), int(windows.shape[1]), tuple(per.tolist()))


def decode_tokens_per_s(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> float:
    """Greedy decoding speed with the KV cache, tokens per second (one warm-up run)."""
    device = next(model.parameters()).device
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
