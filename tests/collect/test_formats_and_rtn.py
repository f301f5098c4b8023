"""Formats, their labels and overheads, and the round-to-nearest reference quantizer."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qbayes.collect.rtn import E2M1_VALUES, NF4_CODE, quantize_dequantize  # noqa: E402
from qbayes.collect.sqnr import SqnrAccumulator  # noqa: E402
from qbayes.errors import QBayesError  # noqa: E402
from qbayes.formats import IDENTITY_INT16, Format, parse_format  # noqa: E402


def _sqnr(w, fmt) -> float:
    acc = SqnrAccumulator()
    acc.add("w", w, quantize_dequantize(w, fmt))
    return acc.overall()


@pytest.fixture
def weight():
    g = torch.Generator().manual_seed(0)
    # heavy-ish tails like trained weights: a few large entries
    w = torch.randn(64, 96, generator=g) * 0.02
    w[3, 7] = 0.3
    return w


@pytest.mark.parametrize(
    "spec, label, kind, bits, group, sym",
    [
        ("int4", "int4", "int", 4, None, True),
        ("INT4-g128", "int4-g128", "int", 4, 128, True),
        ("int3-g64-asym", "int3-g64-asym", "int", 3, 64, False),
        ("fp8", "fp8", "fp", 8, None, True),
        ("fp8-e4m3-g32", "fp8-g32", "fp", 8, 32, True),
        ("nf4-g64", "nf4-g64", "nf", 4, 64, True),
        ("mxint8", "mxint8", "mx", 8, 32, True),
        ("mxfp4", "mxfp4", "mx", 4, 32, True),
    ],
)
def test_parse_format_round_trips(spec, label, kind, bits, group, sym):
    fmt = parse_format(spec)
    assert (fmt.label, fmt.kind, fmt.bits, fmt.group_size, fmt.sym) == (label, kind, bits, group, sym)
    assert parse_format(fmt.label) == fmt


@pytest.mark.parametrize(
    "spec, words",
    [
        ("int9", "out of range 2..8"),
        ("int1-g32", "out of range"),
        ("int16", "out of range"),
        ("fp8-asym", "only integer formats"),
        ("mxfp4-g16", "fixed block"),
        ("float3", "expected"),
    ],
)
def test_bad_formats_say_why(spec, words):
    with pytest.raises(QBayesError, match=words):
        parse_format(spec)


def test_effective_bits_count_scales_and_zero_points():
    assert Format("int", 3, 128).overhead_bits(4096) == pytest.approx(16 / 128)
    assert Format("int", 3, 128, sym=False).overhead_bits(4096) == pytest.approx(19 / 128)  # as published
    assert Format("int", 4).overhead_bits(1000) == pytest.approx(16 / 1000)  # one scale per row
    assert parse_format("mxfp4").overhead_bits(4096) == pytest.approx(8 / 32)
    assert Format("int", 4, 32).storage_bits(2, 64) == 2 * 64 * 4 + 2 * 2 * 16


def test_sqnr_rises_with_bits_for_every_layout(weight):
    for layout in ("", "-g32", "-g32-asym"):
        values = [_sqnr(weight, parse_format(f"int{b}{layout}")) for b in range(2, 9)]
        assert values == sorted(values), (layout, values)
        # roughly 6 dB per bit between 4 and 8 bits
        assert 4.5 < (values[6] - values[2]) / 4 < 7.0
    assert _sqnr(weight, parse_format("mxint4")) < _sqnr(weight, parse_format("mxint8"))
    # groups isolate the outlier: grouped int4 beats per-channel int4
    assert _sqnr(weight, parse_format("int4-g32")) > _sqnr(weight, parse_format("int4"))


def test_identity_int16_reproduces_weights(weight):
    q = quantize_dequantize(weight, IDENTITY_INT16)
    assert torch.allclose(q, weight, atol=float(weight.abs().max()) / 30000)


def test_symmetric_int_levels_and_asymmetric_zero_point():
    w = torch.tensor([[-1.0, -0.5, 0.0, 0.26, 1.0]])
    q = quantize_dequantize(w, parse_format("int2"))  # levels -1, 0, +1 times 1.0
    assert q.tolist() == [[-1.0, -1.0, 0.0, 0.0, 1.0]] or q.tolist() == [[-1.0, -0.0, 0.0, 0.0, 1.0]]
    pos = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.allclose(quantize_dequantize(pos, parse_format("int2-asym")), pos)  # 4 levels, exact


def test_nf4_and_fp4_values_come_from_their_codes(weight):
    q = quantize_dequantize(weight, parse_format("nf4-g32"))
    absmax = weight.reshape(64, 3, 32).abs().amax(-1, keepdim=True)
    codes = (q.reshape(64, 3, 32) / absmax).flatten()
    table = torch.tensor(NF4_CODE)
    assert torch.min((codes[:, None] - table[None]).abs(), dim=1).values.max() < 1e-5
    q4 = quantize_dequantize(weight, parse_format("mxfp4")).reshape(64, 3, 32)
    amax = weight.reshape(64, 3, 32).abs().amax(-1, keepdim=True)
    shared = torch.exp2(torch.floor(torch.log2(amax)) - 2)  # a power of two per block
    elems = (q4 / shared).abs().flatten()
    assert torch.min((elems[:, None] - torch.tensor(E2M1_VALUES)[None]).abs(), dim=1).values.max() < 1e-5


def test_mx_blocks_are_independent_and_padding_is_harmless():
    w = torch.ones(2, 40) * 0.01
    w[0, 0] = 10.0  # only the first block of row 0 should lose its small values
    q = quantize_dequantize(w, parse_format("mxint8"))
    assert q.shape == w.shape
    assert torch.allclose(q[0, 32:], w[0, 32:], rtol=1e-2)
    assert torch.allclose(q[1], w[1], rtol=1e-2)
    assert q[0, 1].item() == 0.0  # 0.01 is below the step 2^3/64 of the block with 10.0


def test_fp8_matches_torch_e4m3(weight):
    q = quantize_dequantize(weight, parse_format("fp8"))
    scale = weight.abs().amax(dim=1, keepdim=True) / 448.0
    ref = (weight / scale).to(torch.float8_e4m3fn).float() * scale
    assert torch.allclose(q, ref)
