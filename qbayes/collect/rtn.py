"""Round-to-nearest quantize-dequantize of a weight matrix, for every :class:`Format`.

All functions take and return a float tensor laid out as ``[out_features, in_features]``;
scales are shared along the input dimension (per output channel, or per group of
``group_size`` consecutive inputs, the last group padded). The result is the dequantized
("fake-quantized") weight, computed in float32.
"""

from __future__ import annotations

import torch

from qbayes.formats import MX_BLOCK, Format

# QLoRA's NormalFloat-4 code (Dettmers et al. 2023, appendix E)
NF4_CODE = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
# magnitudes representable by FP4 e2m1 (OCP MX spec)
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_EMAX = 2  # exponent of the largest normal e2m1 value (6 = 1.5 * 2^2)
E4M3_MAX = 448.0
TINY = 1e-30


def quantize_dequantize(w: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The weight as the format represents it, same shape and dtype as ``w``."""
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D [out, in] weight, got shape {tuple(w.shape)}")
    out_f, in_f = w.shape
    group = fmt.group_size or in_f
    g = _grouped(w.detach().to(torch.float32), group)
    if fmt.kind == "int":
        q = _int_sym(g, fmt.bits) if fmt.sym else _int_asym(g, fmt.bits)
    elif fmt.kind == "fp":
        q = _fp8(g)
    elif fmt.kind == "nf":
        q = _nf4(g)
    elif fmt.kind == "mx":
        q = _mx(_grouped(w.detach().to(torch.float32), MX_BLOCK), fmt)
    else:
        raise ValueError(f"unknown format kind {fmt.kind!r}")
    return q.reshape(out_f, -1)[:, :in_f].to(w.dtype)


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    """[out, in] -> [out, n_groups, group], zero-padding the last group."""
    out_f, in_f = w.shape
    pad = (-in_f) % group
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(out_f, -1, group)


def _int_sym(g: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(TINY) / qmax
    return torch.clamp(torch.round(g / scale), -qmax - 1, qmax) * scale


def _int_asym(g: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2**bits - 1
    lo = g.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = g.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp_min(TINY)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(g / scale) + zero, 0, qmax)
    return (q - zero) * scale


def _fp8(g: torch.Tensor) -> torch.Tensor:
    scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(TINY) / E4M3_MAX
    return (g / scale).to(torch.float8_e4m3fn).to(torch.float32) * scale


def _nearest(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Each element of ``x`` replaced by its nearest value in the sorted ``code``."""
    idx = torch.bucketize(x, (code[1:] + code[:-1]) / 2)
    return code[idx]


def _nf4(g: torch.Tensor) -> torch.Tensor:
    absmax = g.abs().amax(dim=-1, keepdim=True).clamp_min(TINY)
    code = torch.tensor(NF4_CODE, dtype=torch.float32, device=g.device)
    return _nearest(g / absmax, code) * absmax


def _mx(g: torch.Tensor, fmt: Format) -> torch.Tensor:
    """OCP MX: per block of 32, a shared scale 2^(floor(log2 amax) - emax_element)."""
    amax = g.abs().amax(dim=-1, keepdim=True).clamp_min(TINY)
    if fmt.element == "e2m1":
        shared = torch.exp2(torch.floor(torch.log2(amax)) - E2M1_EMAX)
        mags = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=g.device)
        code = torch.cat([-mags.flip(0)[:-1], mags])
        return _nearest(g / shared, code) * shared
    # MXINT-b: two's complement with b-2 fraction bits, range [-2, 2 - 2^-(b-2)]
    frac = 2 ** (fmt.bits - 2)
    shared = torch.exp2(torch.floor(torch.log2(amax)))
    p = torch.clamp(torch.round(g / shared * frac), -2 * frac, 2 * frac - 1) / frac
    return p * shared
