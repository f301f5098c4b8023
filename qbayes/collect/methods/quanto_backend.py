"""optimum-quanto: qint2 / qint4 / qint8 / qfloat8 weights with quanto's own kernels.

quanto picks its quantization layout itself, so only the formats it really produces are
accepted: ``int8`` and ``fp8`` (float8 e4m3), symmetric with one scale per output
channel, and ``int4-g128-asym`` / ``int2-g128-asym`` (scale and shift per group). The
group size of 128 is fixed inside quanto; a layer whose input width is at most 128 or
not divisible by a multiple of 32 falls back to a smaller group or to one scale per
channel. The group size actually used is read back from each layer: the one covering
most weights goes in ``group_size`` and the rest in the note.

Weight bytes are the real storage of quanto's packed tensors. The first int2/int4 use
compiles quanto's C++ extension (about a minute on two cores, then cached).
"""

from __future__ import annotations

from collections import Counter

import torch

from qbayes.collect.methods.base import Method, Quantized, QuantizeJob, Requirement
from qbayes.collect.modelio import LoadedModel
from qbayes.collect.sqnr import SqnrAccumulator
from qbayes.formats import Format

QUANTO_GROUP = 128
QTYPES = {("int", 8): "qint8", ("fp", 8): "qfloat8", ("int", 4): "qint4", ("int", 2): "qint2"}
ACCEPTED = ("int8", "fp8", "int4-g128-asym", "int2-g128-asym")


class Quanto(Method):
    name = "quanto"
    label = "quanto"
    description = "optimum-quanto qint2/qint4/qint8/qfloat8 weights (real kernels)"
    has_kernel = True
    requires = (Requirement("optimum.quanto", "pip install optimum-quanto==0.2.7"),)
    self_check_format = Format("int", 8)

    def format_problem(self, fmt: Format) -> str | None:
        if fmt.label not in ACCEPTED:
            return (
                f"quanto cannot do {fmt.label}: it does {', '.join(ACCEPTED)} "
                f"(int2/int4 with its internal group size {QUANTO_GROUP}, asymmetric)"
            )
        return None

    def model_problem(self, loaded: LoadedModel) -> str | None:
        kinds = {type(layer.module).__name__ for layer in loaded.layers() if layer.transposed}
        if kinds:
            return (
                f"quanto quantizes torch.nn.Linear layers only; this {loaded.model_type} model's "
                f"projections are {', '.join(sorted(kinds))} layers"
            )
        return None

    def quantize(self, job: QuantizeJob) -> Quantized:
        from optimum import quanto

        model = job.loaded.fresh_copy()
        layers = job.loaded.layers(model)
        originals = {layer.name: layer.weight() for layer in job.loaded.layers()}  # the base model's, unchanged
        qtype = getattr(quanto, QTYPES[(job.fmt.kind, job.fmt.bits)])
        names = [layer.name for layer in layers]
        quanto.quantize(model, weights=qtype, include=names)
        quanto.freeze(model)
        sqnr = SqnrAccumulator()
        bits = weights = 0
        groups: Counter = Counter()
        for name, module in model.named_modules():
            if name not in originals:
                continue
            w = module.weight
            if not hasattr(w, "dequantize"):
                raise RuntimeError(f"quanto left layer {name} unquantized")
            sqnr.add(name, originals[name], w.dequantize())
            bits += 8 * _storage_bytes(w)
            weights += originals[name].numel()
            groups[getattr(module, "weight_group_size", None)] += originals[name].numel()
        group, _ = groups.most_common(1)[0]
        notes = []
        if len(groups) > 1:
            spread = ", ".join(
                f"{'per-channel' if g is None else f'g{g}'}: {n} weights" for g, n in groups.most_common()
            )
            notes.append(f"quanto group sizes by layer: {spread}")
        elif group is None and job.fmt.group_size:
            notes.append("quanto used one scale per channel (layers too narrow for groups)")
        return Quantized(
            model, group, bits, weights, sqnr, w_sym=job.fmt.kind != "int" or job.fmt.bits == 8, notes=notes
        )


def _storage_bytes(t: torch.Tensor) -> int:
    """Bytes of a (possibly nested) quanto tensor: its packed data, scales and shifts."""
    if hasattr(t, "__tensor_flatten__"):
        inner, _ = t.__tensor_flatten__()
        return sum(_storage_bytes(getattr(t, n)) for n in inner)
    return t.numel() * t.element_size()
