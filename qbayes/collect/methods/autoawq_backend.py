"""AutoAWQ: an optional, CUDA-only AWQ backend with real 4-bit GEMM kernels.

AutoAWQ is deprecated upstream and corrupts weights when run on CPU, so this unit
declares ``devices=("cuda",)``: on a CPU run its configurations are recorded as skipped.
It is not part of the default install (``pip install autoawq`` on a CUDA machine; it
pins its own torch and transformers versions, so use a separate environment).

It quantizes a copy of the loaded model (:meth:`LoadedModel.fresh_copy`, in the grid's
dtype, on the run's device) through AutoAWQ's model class for its type and
``quantize`` (4-bit, grouped, asymmetric: the only layout its kernels implement), which
replaces the linear layers of that copy with packed ``WQLinear_GEMM`` modules under
their original names. That copy is what is evaluated: there is no save and reload (whose
``device_map`` AutoAWQ hands to accelerate, which refuses ``"cuda"``), no fused layers
(fusing renames the layers), and the row's dtype is the one that ran.
"""

from __future__ import annotations

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
        from awq.models._config import AwqConfig
        from awq.models.auto import AWQ_CAUSAL_LM_MODEL_MAP

        if job.calib is None or job.calib.numel() == 0:
            raise ValueError("AutoAWQ needs calibration data and got none")
        wrapper = AWQ_CAUSAL_LM_MODEL_MAP.get(job.loaded.model_type)
        if wrapper is None:
            raise ValueError(f"AutoAWQ does not support model type {job.loaded.model_type}")
        model = job.loaded.fresh_copy()
        awq_model = wrapper(
            model,
            job.loaded.model_type,
            is_quantized=False,
            config=model.config,
            quant_config=AwqConfig(),
            processor=None,
        )
        config = {"zero_point": True, "q_group_size": job.fmt.group_size, "w_bit": 4, "version": "GEMM"}
        samples = job.calib.tolist()
        awq_model.quantize(
            job.loaded.tokenizer,
            quant_config=config,
            calib_data=samples,
            n_parallel_calib_samples=1,
            max_calib_samples=len(samples),
            max_calib_seq_len=job.calib.shape[1],
        )
        model = awq_model.model.eval()
        del awq_model  # its quantizer holds calibration inputs; the packed layers live on in model
        originals = {layer.name: layer.weight() for layer in job.loaded.layers()}  # the base model's
        sqnr = SqnrAccumulator()
        bits = weights = 0
        for name, module in model.named_modules():
            if name in originals and hasattr(module, "qweight"):
                eff = _dequantize_gemm(module)
                sqnr.add(name, originals[name], eff)
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
            notes=["AutoAWQ GEMM kernels (unfused); SQNR against the original weights"],
        )


def _dequantize_gemm(module):
    """The float weight [out, in] of an AutoAWQ WQLinear_GEMM layer."""
    from awq.utils.packing_utils import dequantize_gemm

    w = dequantize_gemm(module.qweight, module.qzeros, module.scales, module.w_bit, module.group_size)
    return w.t().float()
