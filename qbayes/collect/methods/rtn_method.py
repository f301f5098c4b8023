"""Round-to-nearest: the reference quantizer written here (see :mod:`qbayes.collect.rtn`).

Every format is supported (int 2-8 per channel or grouped, symmetric or not; fp8 e4m3;
nf4; mxint8, mxint4, mxfp4). Weights are quantized and dequantized in place (fake
quantization), so there is no low-bit kernel and no decode speed. The self-check uses
16-bit integers, which must reproduce the baseline loss.
"""

from __future__ import annotations

from qbayes.collect.methods.base import Method, Quantized, QuantizeJob
from qbayes.collect.rtn import quantize_dequantize
from qbayes.collect.sqnr import SqnrAccumulator
from qbayes.formats import IDENTITY_INT16


class RTN(Method):
    name = "rtn"
    label = "RTN"
    description = "round-to-nearest reference (int2-8, fp8, nf4, MX), fake-quantized"
    self_check_format = IDENTITY_INT16

    def quantize(self, job: QuantizeJob) -> Quantized:
        model = job.loaded.fresh_copy()
        sqnr = SqnrAccumulator()
        bits = weights = 0
        for layer in job.loaded.layers(model):
            w = layer.weight()
            q = quantize_dequantize(w, job.fmt)
            sqnr.add(layer.name, w, q)
            layer.set_weight(q)
            out_f, in_f = layer.shape
            bits += job.fmt.storage_bits(out_f, in_f)
            weights += out_f * in_f
        return Quantized(model, job.fmt.group_size, bits, weights, sqnr, w_sym=job.fmt.sym)
