"""AutoAWQ: an optional, CUDA-only AWQ backend with real 4-bit GEMM kernels.

AutoAWQ is deprecated upstream and corrupts weights when run on CPU, so this unit
declares ``devices=("cuda",)``: on a CPU run its configurations are recorded as skipped.
It is not part of the default install (``pip install autoawq`` on a CUDA machine; it
pins its own torch and transformers versions, so use a separate environment).

It quantizes the model through ``AutoAWQForCausalLM.quantize`` (4-bit, grouped,
asymmetric: the only layout its kernels implement) and evaluates the packed model.
"""

from __future__ import annotations

import tempfile

from qbayes.collect.methods.base import Method, Quantized, QuantizeJob, Requirement
from qbayes.collect.sqnr import SqnrAccumulator
from qbayes.formats import Format

AUTOAWQ_GROUPS = (32, 64, 128)


class AutoAWQ(Method):
    name = "autoawq"
    label = "AWQ"
    label_suffix = "@autoawq"  # llm-compressor's AWQ rows have the same method label
    description = "AutoAWQ (deprecated upstream), CUDA only, 4-bit GEMM kernels"
    devices = ("cuda",)
    needs_calibration = True
    has_kernel = True
    requires = (Requirement("awq", "pip install autoawq (CUDA machines only)"),)
    # AutoAWQ only does 4 bits; its self-check is a 4-bit run that must stay within
    # 0.1 nats of the baseline (CPU corruption gives losses several nats higher).
    self_check_format = Format("int", 4, 128, sym=False)
    self_check_tol = 0.1

    def format_problem(self, fmt: Format) -> str | None:
        if fmt.kind != "int" or fmt.bits != 4 or fmt.sym or fmt.group_size not in AUTOAWQ_GROUPS:
            return f"AutoAWQ does int4-g{{32,64,128}}-asym only, not {fmt.label}"
        return None

    def quantize(self, job: QuantizeJob) -> Quantized:
        from awq import AutoAWQForCausalLM

        if job.calib is None or job.calib.numel() == 0:
            raise ValueError("AutoAWQ needs calibration data and got none")
        config = {"zero_point": True, "q_group_size": job.fmt.group_size, "w_bit": 4, "version": "GEMM"}
        originals = {layer.name: layer.weight().clone() for layer in job.loaded.layers()}
        awq_model = AutoAWQForCausalLM.from_pretrained(str(job.loaded.path), device_map=str(job.loaded.device))
        samples = [row for row in job.calib.tolist()]
        awq_model.quantize(
            job.loaded.tokenizer,
            quant_config=config,
            calib_data=samples,
            n_parallel_calib_samples=1,
            max_calib_seq_len=job.calib.shape[1],
        )
        with tempfile.TemporaryDirectory() as tmp:
            awq_model.save_quantized(tmp)
            quantized = AutoAWQForCausalLM.from_quantized(tmp, device_map=str(job.loaded.device))
        model = quantized.model.eval()
        sqnr = SqnrAccumulator()
        bits = weights = 0
        for name, module in model.named_modules():
            if name in originals and hasattr(module, "qweight"):
                eff = _dequantize_gemm(module)
                sqnr.add(name, originals[name].to(eff.device), eff)
                out_f, in_f = originals[name].shape
                bits += job.fmt.storage_bits(out_f, in_f)
                weights += out_f * in_f
        if not weights:
            raise RuntimeError("AutoAWQ produced no quantized layers")
        return Quantized(
            model,
            job.fmt.group_size,
            bits,
            weights,
            sqnr,
            w_sym=False,
            notes=["AutoAWQ GEMM kernels; SQNR against the original weights"],
        )


def _dequantize_gemm(module):
    """The float weight [out, in] of an AutoAWQ WQLinear_GEMM layer."""
    from awq.utils.packing_utils import dequantize_gemm

    w = dequantize_gemm(module.qweight, module.qzeros, module.scales, module.w_bit, module.group_size)
    return w.t().float()
