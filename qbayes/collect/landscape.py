"""Loss-landscape features around the unquantized weights (after arXiv 2410.12119).

All three look at the loss ``L`` (mean NLL, nats/token, on a fixed batch of evaluation
windows) as a function of the weights quantization will perturb: the quantizable layers'
weight matrices.

* ``hessian_trace``: Hutchinson's estimator ``tr(H) = E[v^T H v]`` with Rademacher
  ``v``, using Hessian-vector products; reported for the whole model (with the standard
  error over samples) and per layer (the trace of that layer's diagonal Hessian block,
  from the same samples).
* ``hessian_top_eig``: the dominant eigenvalue of ``H`` by power iteration.
* ``radial_loss``: ``L(w + r d) - L(w)`` along filter-normalised random directions ``d``
  (Li et al. 2018: each output row of ``d`` rescaled to the norm of the same row of ``w``),
  averaged over directions, at each radius ``r``.

Second derivatives through attention need the eager attention implementation, which is
switched on while the Hessian features are computed.

Precision and memory: a 16-bit model is raised to float32 for these features and
returned to its dtype afterwards (exactly: float32 holds every 16-bit value), so the
weight perturbations and Hessian-vector products are float32 ones (in bfloat16 a step
of 1e-3 of a weight's scale leaves most elements unchanged). The loss is a mean over
windows, so its Hessian-vector product is the token-weighted sum of each window's;
they are taken one window at a time, which bounds the double-backward graph to one
window's.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from qbayes.collect.evaluate import input_device
from qbayes.collect.modelio import LayerRef


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float | None = None


@dataclass
class LandscapeResult:
    trace: Estimate | None = None
    trace_per_layer: dict[str, Estimate] = field(default_factory=dict)
    top_eig: Estimate | None = None
    radial: dict[float, Estimate] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)  # feature name -> seconds


def _mean_se(samples: list[float]) -> Estimate:
    n = len(samples)
    mean = sum(samples) / n
    if n < 2:
        return Estimate(mean, None)
    var = sum((s - mean) ** 2 for s in samples) / (n - 1)
    return Estimate(mean, math.sqrt(var / n))


def batch_loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over the windows (nats/token), differentiable."""
    ids = windows.to(input_device(model))
    logits = model(input_ids=ids, use_cache=False).logits.float()
    targets = ids[:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))


@contextlib.contextmanager
def in_float32(model: torch.nn.Module):
    """The model in float32 for the block, back in its own dtype afterwards (exact for
    16-bit weights)."""
    dtype = next(model.parameters()).dtype
    if dtype == torch.float32:
        yield model
        return
    model.float()
    try:
        yield model
    finally:
        model.to(dtype)


@contextlib.contextmanager
def differentiable(model: torch.nn.Module, layers: list[LayerRef]):
    """Eager attention and gradients on the layers' weights, restored afterwards."""
    previous = getattr(model.config, "_attn_implementation", None)
    model.set_attn_implementation("eager")
    weights = [layer.module.weight for layer in layers]
    for w in weights:
        w.requires_grad_(True)
    try:
        yield weights
    finally:
        for w in weights:
            w.requires_grad_(False)
            w.grad = None
        if previous:
            model.set_attn_implementation(previous)


def hvp_parts(model, weights: list[torch.Tensor], windows: torch.Tensor, vs: list[torch.Tensor], *, keep: bool):
    """The Hessian of the mean loss over ``windows`` times ``vs``, one window's
    double-backward graph at a time: (per-weight ``v . Hv``, and ``Hv`` itself when
    ``keep``)."""
    parts = [0.0] * len(weights)
    total = [torch.zeros_like(v) for v in vs] if keep else None
    for window in windows.split(1):
        share = 1.0 / windows.shape[0]  # every window predicts the same number of tokens
        loss = batch_loss(model, window)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
        hvs = torch.autograd.grad(dot, weights)
        for i, (v, hv) in enumerate(zip(vs, hvs, strict=True)):
            parts[i] += share * float((v * hv).sum())
            if keep:
                total[i].add_(hv, alpha=share)
        del loss, grads, dot, hvs
    return parts, total


def hutchinson(model, layers: list[LayerRef], windows, n_samples: int, gen: torch.Generator):
    """(whole-model trace estimate, per-layer estimates)."""
    with differentiable(model, layers) as weights:
        totals, per_layer = [], {layer.name: [] for layer in layers}
        for _ in range(n_samples):
            vs = [_rademacher(w, gen) for w in weights]
            parts, _ = hvp_parts(model, weights, windows, vs, keep=False)
            for layer, part in zip(layers, parts, strict=True):
                per_layer[layer.name].append(part)
            totals.append(sum(parts))
    return _mean_se(totals), {name: _mean_se(s) for name, s in per_layer.items()}


def top_eigenvalue(model, layers: list[LayerRef], windows, iters: int, gen: torch.Generator) -> Estimate:
    """Dominant Hessian eigenvalue by power iteration (Rayleigh quotient of the last step)."""
    with differentiable(model, layers) as weights:
        vs = [torch.randn(w.shape, generator=gen).to(w.device, w.dtype) for w in weights]
        vs = _normalise(vs)
        eig = 0.0
        for _ in range(iters):
            parts, hvs = hvp_parts(model, weights, windows, vs, keep=True)
            eig = sum(parts)
            if float(sum((hv * hv).sum() for hv in hvs)) == 0.0:
                break
            vs = _normalise(hvs)
    return Estimate(eig, None)


def radial_loss(
    model, layers: list[LayerRef], windows, radii, n_directions: int, gen: torch.Generator
) -> dict[float, Estimate]:
    """Mean loss increase at each radius along filter-normalised random directions."""
    originals = [layer.module.weight.data.clone() for layer in layers]
    with torch.no_grad():
        base = float(batch_loss(model, windows))
        rises: dict[float, list[float]] = {r: [] for r in radii}
        try:
            for _ in range(n_directions):
                dirs = [_filter_normalised(layer, w0, gen) for layer, w0 in zip(layers, originals, strict=True)]
                for r in radii:
                    for layer, w0, d in zip(layers, originals, dirs, strict=True):
                        layer.module.weight.data.copy_(w0 + r * d)
                    rises[r].append(float(batch_loss(model, windows)) - base)
        finally:
            for layer, w0 in zip(layers, originals, strict=True):
                layer.module.weight.data.copy_(w0)
    return {r: _mean_se(v) for r, v in rises.items()}


def landscape(
    model, layers, windows, *, hutchinson_samples: int, power_iters: int, radii, radial_directions: int, seed: int
) -> LandscapeResult:
    """Every landscape feature, timed one by one."""
    gen = torch.Generator().manual_seed(seed)
    out = LandscapeResult()
    with in_float32(model):
        t0 = time.perf_counter()
        out.trace, out.trace_per_layer = hutchinson(model, layers, windows, hutchinson_samples, gen)
        out.wall_s["hessian_trace"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out.top_eig = top_eigenvalue(model, layers, windows, power_iters, gen)
        out.wall_s["hessian_top_eig"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out.radial = radial_loss(model, layers, windows, radii, radial_directions, gen)
        out.wall_s["radial_loss"] = time.perf_counter() - t0
    return out


def _rademacher(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).to(w.device, w.dtype)


def _normalise(vs: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(sum(float((v * v).sum()) for v in vs)) or 1.0
    return [v / norm for v in vs]


def _filter_normalised(layer: LayerRef, w0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random direction shaped like the weight, each output row scaled to that row's norm."""
    d = torch.randn(w0.shape, generator=gen).to(w0.device, w0.dtype)
    axis = 0 if layer.transposed else 1  # Conv1D stores [in, out]: rows are columns
    scale = w0.norm(dim=axis, keepdim=True) / d.norm(dim=axis, keepdim=True).clamp_min(1e-12)
    return d * scale
