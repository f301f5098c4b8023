"""Weight number formats: what a quantizer is asked to produce, and its label.

A format is written as a short spec string, the same one used in grid files, on the
command line and (canonicalised) in ``results.dtype_label``:

=================  ==========================================================
``int4``           4-bit integers, one scale per output channel, symmetric
``int4-g128``      ... one scale per group of 128 input weights
``int3-g64-asym``  ... asymmetric (scale and zero point per group)
``fp8``            float8 e4m3 elements, one scale per output channel
``fp8-g32``        ... one scale per group of 32
``nf4-g64``        4-bit NormalFloat (QLoRA) code, absmax scale per group
``mxint8``         OCP MX block format: 32 elements share a power-of-two scale,
``mxint4``         elements are 8/4-bit two's complement fixed point
``mxfp4``          ... elements are FP4 (e2m1)
=================  ==========================================================

Integer widths 2-8 are accepted (16 only for the RTN self-check, see
:data:`IDENTITY_INT16`). This module has no torch dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qbayes.errors import QBayesError

MX_BLOCK = 32  # OCP Microscaling block size
MX_SCALE_BITS = 8  # E8M0 shared exponent
SCALE_BITS = 16  # scales and absmax values are counted as 16-bit numbers
INT_BITS_RANGE = (2, 8)
KINDS = ("int", "fp", "nf", "mx")  # results.w_kind values used by the collector

_SPEC = re.compile(
    r"^(?P<base>int(?P<ibits>\d+)|fp8(?:-e4m3)?|nf4|mxint8|mxint4|mxfp4)"
    r"(?:-g(?P<group>\d+))?(?P<asym>-asym)?$"
)


@dataclass(frozen=True)
class Format:
    """One weight format. ``group_size`` None means one scale per output channel."""

    kind: str  # int, fp, nf, mx
    bits: int
    group_size: int | None = None
    sym: bool = True
    element: str = "int"  # int, e4m3, nf4, e2m1

    @property
    def label(self) -> str:
        """Canonical spec string, used as ``results.dtype_label``."""
        if self.kind == "mx":
            return f"mx{'fp' if self.element == 'e2m1' else 'int'}{self.bits}"
        base = {"int": f"int{self.bits}", "fp": "fp8", "nf": "nf4"}[self.kind]
        group = f"-g{self.group_size}" if self.group_size else ""
        return base + group + ("" if self.sym else "-asym")

    def __str__(self) -> str:
        return self.label

    def overhead_bits(self, in_features: int) -> float:
        """Extra bits per weight for scales (and zero points) when a row has
        ``in_features`` weights: what makes ``w_bits_eff`` larger than ``bits``."""
        if self.kind == "mx":
            return MX_SCALE_BITS / MX_BLOCK
        group = self.group_size or in_features
        per_group = SCALE_BITS + (0 if self.sym else self.bits)
        n_groups = -(-in_features // group)
        return per_group * n_groups / in_features

    def storage_bits(self, out_features: int, in_features: int) -> int:
        """Bits needed to store one quantized [out, in] matrix with its scales."""
        return round(out_features * in_features * (self.bits + self.overhead_bits(in_features)))


def parse_format(spec: str, *, allow_identity: bool = False) -> Format:
    """Parse a format spec (see the module docstring); raises QBayesError with the reason."""
    text = str(spec).strip().lower()
    m = _SPEC.match(text)
    if m is None:
        raise QBayesError(
            f"bad format '{spec}': expected intB[-gG][-asym] (B in 2..8), fp8[-gG], nf4[-gG], mxint8, mxint4 or mxfp4"
        )
    base, group, asym = m["base"], m["group"], bool(m["asym"])
    group_size = int(group) if group else None
    if group_size is not None and group_size < 1:
        raise QBayesError(f"bad format '{spec}': group size must be positive")
    if m["ibits"] is not None:
        bits = int(m["ibits"])
        lo, hi = INT_BITS_RANGE
        if not (lo <= bits <= hi) and not (allow_identity and bits == 16):
            raise QBayesError(f"bad format '{spec}': integer bits {bits} out of range {lo}..{hi}")
        return Format("int", bits, group_size, sym=not asym)
    if asym:
        raise QBayesError(f"bad format '{spec}': only integer formats can be asymmetric")
    if base.startswith("fp8"):
        return Format("fp", 8, group_size, element="e4m3")
    if base == "nf4":
        return Format("nf", 4, group_size, element="nf4")
    if group_size is not None:
        raise QBayesError(f"bad format '{spec}': MX formats have a fixed block of {MX_BLOCK}")
    element = "e2m1" if base == "mxfp4" else "int"
    return Format("mx", int(base[-1]), MX_BLOCK, element=element)


IDENTITY_INT16 = Format("int", 16)  # RTN self-check: must reproduce the baseline loss
