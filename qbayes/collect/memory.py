"""The memory plan of a collection run: peak device bytes of each step, before any weight loads.

From the model's skeleton (built from ``config.json`` on the meta device) and the grid,
:func:`plan` estimates the peak bytes each step of a run holds on the device:

* every step: the base model's weights in the grid's dtype (``W``);
* a quantized configuration: ``W`` again for its copy (:meth:`LoadedModel.fresh_copy`),
  the method's own working memory (calibration activations of one decoder block for all
  calibration samples and one Hessian per layer of the block for GPTQ, the activation
  cache of AWQ, one layer's float32 temporaries for round-to-nearest), and an evaluation
  batch scored against the base model (two sets of logits, one float32 chunk);
* a baseline: ``W`` and one evaluation batch without KV cache;
* the landscape features: the weights in float32 (they are perturbed and differentiated
  in float32), three float32 vectors the size of the quantizable weights (gradient,
  probe, Hessian-vector product) and the double-backward graph of one window;
* the outlier features: ``W`` and one forward batch.

The figures are estimates (activation counts follow Korthikanti et al. 2022, "Reducing
Activation Recomputation", ~34 values per token and hidden unit per layer in training,
plus the attention scores), meant to refuse a run that cannot fit with numbers and a
fix, before hours are spent loading it. A model whose weights exceed one device is
spread over all visible devices (``device_map="auto"``); each then holds its share of
every copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qbayes.collect.grid import Grid
from qbayes.collect.modelio import LoadedModel

GIB = 1024**3
HEADROOM = 0.9  # share of a device's memory a plan may use (CUDA context, fragmentation)
KL_CHUNK = 512  # positions per float64 KL chunk (as in evaluate)
TRAIN_ACTS_PER_TOKEN = 34  # activation values per token and hidden unit per layer (Korthikanti et al.)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CALIBRATED = {"gptq", "awq", "autoawq"}


@dataclass(frozen=True)
class Shape:
    """What the estimates need of a model, read from its skeleton."""

    params: int
    quant_params: int  # weights of the quantizable layers
    layers: int  # decoder blocks
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    largest_layer: int  # weights of the largest quantizable layer
    block_in_sq: int  # sum over one block's quantizable layers of in_features^2 (GPTQ Hessians)

    @classmethod
    def of(cls, bones: LoadedModel) -> Shape:
        c = bones.model.config
        layers = bones.layers()
        hidden = int(getattr(c, "hidden_size", 0) or getattr(c, "n_embd", 0) or getattr(c, "d_model", 0))
        blocks = int(getattr(c, "num_hidden_layers", 0) or getattr(c, "n_layer", 0) or 1)
        inter = int(getattr(c, "intermediate_size", 0) or getattr(c, "ffn_dim", 0) or 4 * hidden)
        heads = int(getattr(c, "num_attention_heads", 0) or getattr(c, "n_head", 0) or 1)
        vocab = int(getattr(c, "vocab_size", 0))
        params = sum(p.numel() for p in {id(p): p for p in bones.model.parameters()}.values())
        sizes = [layer.shape for layer in layers]
        return cls(
            params=params,
            quant_params=sum(o * i for o, i in sizes),
            layers=blocks,
            hidden=hidden,
            intermediate=inter,
            heads=heads,
            vocab=vocab,
            largest_layer=max((o * i for o, i in sizes), default=0),
            block_in_sq=sum(i * i for _, i in sizes) // blocks,
        )


@dataclass(frozen=True)
class Peak:
    """One step's estimated peak, with its parts (name -> bytes)."""

    step: str
    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def describe(self) -> str:
        parts = " + ".join(f"{name} {gib(b)}" for name, b in self.parts if b)
        return f"{self.step}: {gib(self.total)} ({parts})"


@dataclass(frozen=True)
class MemoryPlan:
    dtype: str
    weights: int  # W: the base model in the grid's dtype
    peaks: tuple[Peak, ...]

    @property
    def largest(self) -> Peak:
        return max(self.peaks, key=lambda p: p.total)

    def problem(self, capacity: int, devices: int = 1) -> str | None:
        """Why the plan does not fit ``devices`` devices of ``capacity`` bytes each, with
        the fix, or None."""
        usable = int(capacity * HEADROOM) * devices
        worst = self.largest
        if worst.total <= usable:
            return None
        where = f"{devices} device(s) of {gib(capacity)}" if devices > 1 else f"a device of {gib(capacity)}"
        fixes = []
        if self.dtype == "float32":
            fixes.append('collect in bfloat16 ([eval] dtype = "bfloat16"; the gpu grid does)')
        fixes.append("lower eval.batch_size or calibration.samples")
        if any(p.step.startswith("features/landscape") for p in self.peaks):
            fixes.append("turn features.landscape off")
        fixes.append("or use a node with more GPU memory (a model spreads over every visible GPU)")
        return (
            f"the largest step needs about {gib(worst.total)}, more than {int(HEADROOM * 100)}% of {where}: "
            f"{worst.describe()}; fix: {', '.join(fixes)}"
        )


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def plan(bones: LoadedModel, grid: Grid, method_names: list[str]) -> MemoryPlan:
    """The estimated peak of every kind of step of ``grid`` for the model ``bones``."""
    s = Shape.of(bones)
    b = BYTES[grid.eval.dtype]
    w = s.params * b
    e, cal, f = grid.eval, grid.calibration, grid.features
    batch = min(e.batch_size, max(1, (e.tokens or e.seq_len) // e.seq_len))

    def forward(tokens: int, seq: int) -> int:
        """One no-grad forward of ``tokens`` tokens in windows of ``seq`` (no KV cache):
        a few hidden-sized tensors, the MLP's widest activation and one layer's scores."""
        return tokens * (4 * s.hidden + 2 * s.intermediate) * b + (tokens // seq) * s.heads * seq * seq * b

    def evaluation(reference: bool) -> tuple[tuple[str, int], ...]:
        tokens = batch * e.seq_len
        logits = tokens * s.vocab * b * (2 if reference else 1)
        chunk = KL_CHUNK * s.vocab * (8 * 3 if reference else 4 * 2)
        return (("evaluation batch", forward(tokens, e.seq_len) + logits + chunk),)

    peaks = [Peak("baseline", (("weights", w), *evaluation(False)))]
    cal_acts = cal.samples * cal.seq_len * s.hidden * b
    for name in method_names:
        if name in ("gptq",):
            work = 2 * cal_acts + 4 * s.block_in_sq
        elif name in ("awq", "autoawq"):
            work = 2 * cal_acts + cal.samples * cal.seq_len * s.intermediate * b
        else:
            work = 3 * 4 * s.largest_layer
        peaks.append(
            Peak(
                f"{name} configuration",
                (("weights", w), ("quantized copy", w), (f"{name} working memory", work), *evaluation(e.kl)),
            )
        )
    if f.outliers:
        tokens = min(e.batch_size, max(1, f.outlier_tokens // cal.seq_len)) * cal.seq_len
        peaks.append(Peak("features/outliers", (("weights", w), ("forward batch", forward(tokens, cal.seq_len)))))
    if f.landscape:
        graph = 2 * f.seq_len * s.layers * 4 * (TRAIN_ACTS_PER_TOKEN * s.hidden + 5 * s.heads * f.seq_len)
        peaks.append(
            Peak(
                "features/landscape",
                (
                    ("weights in float32", s.params * 4),
                    ("gradient, probe, Hessian-vector product", 3 * 4 * s.quant_params),
                    ("double-backward graph of one window", graph + f.seq_len * s.vocab * 4 * 3),
                ),
            )
        )
    return MemoryPlan(grid.eval.dtype, w, tuple(peaks))


def cuda_capacity() -> tuple[int, int]:
    """(bytes of the smallest visible CUDA device, number of devices); (0, 0) without CUDA."""
    if not torch.cuda.is_available():
        return 0, 0
    n = torch.cuda.device_count()
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(n)), n


def spread_needed(plan_: MemoryPlan, capacity: int) -> bool:
    """Whether the largest step does not fit one device, so the model is spread over all."""
    return plan_.largest.total > int(capacity * HEADROOM)
