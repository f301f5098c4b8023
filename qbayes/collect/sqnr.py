"""Signal-to-quantization-noise ratio of weights, per layer and overall.

For a layer with reference weights ``W`` and the weights ``Q`` a quantized model really
uses, ``SQNR = 10 log10(||W||^2 / ||W - Q||^2)`` dB. The overall figure pools signal and
noise power over all quantized layers (it is not a mean of the per-layer dB values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

INF_DB = 300.0  # reported for a layer the format represents exactly


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return INF_DB
    if signal <= 0.0:
        return -INF_DB
    return min(INF_DB, 10.0 * math.log10(signal / noise))


@dataclass
class SqnrAccumulator:
    signal: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, reference: torch.Tensor, quantized: torch.Tensor) -> None:
        ref = reference.detach().double()
        self.signal[name] = float((ref * ref).sum())
        # the quantized copy may sit elsewhere (a backend that offloads): compare on the reference's device
        self.noise[name] = float(((ref - quantized.detach().to(ref.device, torch.float64)) ** 2).sum())

    def per_layer(self) -> dict[str, float]:
        return {name: _db(self.signal[name], self.noise[name]) for name in self.signal}

    def overall(self) -> float | None:
        if not self.signal:
            return None
        return _db(sum(self.signal.values()), sum(self.noise.values()))
