"""Activation and weight outlier statistics (after arXiv 2405.20835).

Activations are the *inputs* of the quantizable layers (what a weight quantizer's error
is multiplied by), captured with forward hooks while calibration text of one kind runs
through the model. Per layer:

* ``act_max_abs``: largest |activation|;
* ``act_median_abs``: median |activation| (over a seeded subsample of at most
  ``SAMPLE_PER_BATCH`` elements per batch);
* ``act_kurtosis``: Pearson kurtosis ``m4 / m2^2`` of all activation elements (3 for a
  Gaussian; large values mean heavy tails);
* ``act_outlier_frac``: fraction of input channels whose max |activation| exceeds
  ``threshold`` times the median of the channels' max |activation|.

Model summaries (scope ``model``): the max over layers for ``act_max_abs``, the median
over layers for ``act_median_abs``, and the mean over layers for the kurtosis and the
outlier fraction. Weights: ``weight_kurtosis`` (Pearson, all elements of a layer; model:
mean over layers) and ``weight_max_over_std`` (max |w| / std(w); model: max over layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from qbayes.collect.evaluate import input_device
from qbayes.collect.modelio import LayerRef

SAMPLE_PER_BATCH = 65536


@dataclass
class _Moments:
    """Running power sums of activation elements, plus per-channel max |a|, kept on the
    activations' device: each batch adds a few float64 scalars, one channel-wide vector
    and a subsample, never a host copy of the activation itself."""

    n: int = 0
    s: torch.Tensor | None = None  # float64 [4]: sums of a, a^2, a^3, a^4
    max_abs: torch.Tensor | None = None
    channel_max: torch.Tensor | None = None
    samples: list[torch.Tensor] = field(default_factory=list)

    def add(self, x: torch.Tensor, gen: torch.Generator) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        flat = x.reshape(-1)
        self.n += flat.numel()
        sq = flat * flat
        sums = torch.stack(
            [t.sum(dtype=torch.float64) for t in (flat, sq, sq * flat, sq * sq)]
        )  # float32 powers, summed in float64
        self.s = sums if self.s is None else self.s + sums
        cmax = x.abs().amax(dim=0)
        self.channel_max = cmax if self.channel_max is None else torch.maximum(self.channel_max, cmax)
        top = cmax.max()
        self.max_abs = top if self.max_abs is None else torch.maximum(self.max_abs, top)
        a = flat.abs()
        if a.numel() > SAMPLE_PER_BATCH:
            a = a[torch.randint(0, a.numel(), (SAMPLE_PER_BATCH,), generator=gen).to(a.device)]
        self.samples.append(a)

    def kurtosis(self) -> float:
        n = self.n
        m1, m2, m3, m4 = (float(v) / n for v in self.s.cpu())
        var = m2 - m1**2
        if var <= 0:
            return 0.0
        c4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
        return c4 / var**2


@dataclass(frozen=True)
class LayerActivations:
    max_abs: float
    median_abs: float
    kurtosis: float
    outlier_frac: float


def activation_stats(
    model: torch.nn.Module, layers: list[LayerRef], windows: torch.Tensor, batch_size: int, threshold: float, seed: int
) -> dict[str, LayerActivations]:
    """Per-layer input statistics over the token windows."""
    gen = torch.Generator().manual_seed(seed)
    moments = {layer.name: _Moments() for layer in layers}
    handles = []
    for layer in layers:

        def hook(module, args, _m=moments[layer.name]):
            _m.add(args[0], gen)

        handles.append(layer.module.register_forward_pre_hook(hook))
    device = input_device(model)
    try:
        with torch.no_grad():
            for batch in windows.split(batch_size):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, m in moments.items():
        if m.n == 0:
            continue
        cmax = m.channel_max
        frac = float((cmax > threshold * cmax.median()).float().mean())
        out[name] = LayerActivations(float(m.max_abs), float(torch.cat(m.samples).median()), m.kurtosis(), frac)
    return out


def summarise_activations(per_layer: dict[str, LayerActivations]) -> LayerActivations:
    vals = list(per_layer.values())
    medians = torch.tensor([v.median_abs for v in vals])
    return LayerActivations(
        max(v.max_abs for v in vals),
        float(medians.median()),
        sum(v.kurtosis for v in vals) / len(vals),
        sum(v.outlier_frac for v in vals) / len(vals),
    )


@dataclass(frozen=True)
class LayerWeights:
    kurtosis: float
    max_over_std: float


def weight_stats(layers: list[LayerRef]) -> dict[str, LayerWeights]:
    out = {}
    for layer in layers:
        w = layer.weight().double().reshape(-1)
        c = w - w.mean()
        var = float((c * c).mean())
        kurt = float((c**4).mean()) / var**2 if var > 0 else 0.0
        std = var**0.5
        out[layer.name] = LayerWeights(kurt, float(w.abs().max()) / std if std > 0 else 0.0)
    return out


def summarise_weights(per_layer: dict[str, LayerWeights]) -> LayerWeights:
    vals = list(per_layer.values())
    return LayerWeights(sum(v.kurtosis for v in vals) / len(vals), max(v.max_over_std for v in vals))
