"""GPTQ and AWQ through llm-compressor (``llmcompressor.oneshot``), on CPU or CUDA.

Both quantize the linear layers to integer weights (2-8 bits, per channel or grouped,
symmetric or not) using calibration text. llm-compressor keeps the weights in float and
quantizes them on the fly (fake quantization); after ``oneshot`` the effective
quantized weights are written into the layers, so evaluation, SQNR and features all see
exactly what the quantized model computes.

* GPTQ: ``GPTQModifier`` (error-compensating, column by column). Its SQNR is measured
  against the original weights, since GPTQ changes them on purpose.
* AWQ: ``AWQModifier`` (activation-aware channel scaling, compensated in the previous
  layer) followed by round-to-nearest ``QuantizationModifier``. Its SQNR is measured
  against the scaled float weights, the ones that were quantized.

On a machine without an accelerator, llm-compressor's AWQ pins its activation cache in
page-locked memory, which fails ("Cannot access accelerator device"); that step only
speeds up host-to-GPU copies, so it is switched off while running on CPU.

Supported model types: those whose projections are ``torch.nn.Linear`` (not GPT-2's
``Conv1D``); AWQ additionally needs layer mappings, which llm-compressor has for Llama,
Mistral, Qwen and others, and which are given here for OPT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import torch

from qbayes.collect.methods.base import Method, Quantized, QuantizeJob, Requirement
from qbayes.collect.modelio import LoadedModel
from qbayes.collect.sqnr import SqnrAccumulator
from qbayes.formats import Format

INSTALL = "pip install llmcompressor==0.14.0.1"

# OPT is not in llm-compressor's AWQ mapping registry: smooth each layer norm into the
# projections it feeds, and v_proj into out_proj.
OPT_AWQ_MAPPINGS = (
    ("re:.*self_attn_layer_norm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$")),
    ("re:.*v_proj$", ("re:.*out_proj$",)),
    # layers.N.final_layer_norm, not the decoder's own final_layer_norm after the last layer
    (r"re:.*layers\.\d+\.final_layer_norm$", ("re:.*fc1$",)),
)
OWN_AWQ_MAPPINGS = {"OPTForCausalLM": OPT_AWQ_MAPPINGS}


@dataclass(frozen=True)
class GptqOptions:
    dampening_frac: float = 0.01
    block_size: int = 128


@dataclass(frozen=True)
class AwqOptions:
    n_grid: int = 20  # scales tried per mapping
    duo_scaling: bool = True


class _LlmcMethod(Method):
    needs_calibration = True
    requires = (Requirement("llmcompressor", INSTALL),)
    self_check_format = Format("int", 8)

    def format_problem(self, fmt: Format) -> str | None:
        if fmt.kind != "int" or fmt.bits > 8:
            return f"{self.label} via llm-compressor does integer formats (int2..int8) only, not {fmt.label}"
        return None

    def model_problem(self, loaded: LoadedModel) -> str | None:
        kinds = {type(layer.module).__name__ for layer in loaded.layers() if layer.transposed}
        if kinds:
            return (
                f"llm-compressor quantizes torch.nn.Linear layers only; this {loaded.model_type} "
                f"model's projections are {', '.join(sorted(kinds))} layers"
            )
        return None

    def model_format_problem(self, loaded: LoadedModel, fmt: Format) -> str | None:
        return group_problem(loaded.layers(), fmt)

    def recipe(self, job: QuantizeJob, ignore: list[str]) -> list:
        raise NotImplementedError

    def sqnr_reference_is_original(self) -> bool:
        return True

    def quantize(self, job: QuantizeJob) -> Quantized:
        _quiet_llmcompressor()  # before the import, which logs (and turns its logging on)
        from compressed_tensors.quantization import forward_quantize
        from llmcompressor import oneshot

        _quiet_llmcompressor()

        if job.calib is None or job.calib.numel() == 0:
            raise ValueError(f"{self.label} needs calibration data and got none")
        model = job.loaded.fresh_copy()
        layers = job.loaded.layers(model)
        problem = group_problem(layers, job.fmt)
        if problem:
            raise ValueError(problem)
        originals = {layer.name: layer.weight() for layer in job.loaded.layers()}  # the base model's, unchanged
        head = _module_name(model, model.get_output_embeddings())
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            with _no_pinned_memory(job.loaded.device):
                oneshot(
                    model=model,
                    dataset=_dataset(job.calib),
                    recipe=self.recipe(job, [head] if head else []),
                    num_calibration_samples=job.calib.shape[0],
                    max_seq_length=job.calib.shape[1],
                    shuffle_calibration_samples=False,
                )
        finally:
            forget_session()
        sqnr = SqnrAccumulator()
        bits = weights = 0
        with torch.no_grad():
            for layer in layers:
                module = layer.module
                scheme = getattr(module, "quantization_scheme", None)
                if scheme is None or scheme.weights is None:
                    raise RuntimeError(f"llm-compressor left layer {layer.name} unquantized")
                pre = module.weight.data.clone()
                eff = forward_quantize(module, pre, "weight", scheme.weights)
                ref = originals[layer.name] if self.sqnr_reference_is_original() else pre
                sqnr.add(layer.name, ref, eff)
                module.weight.data.copy_(eff)
                out_f, in_f = layer.shape
                bits += job.fmt.storage_bits(out_f, in_f)
                weights += out_f * in_f
        return Quantized(
            model,
            job.fmt.group_size,
            bits,
            weights,
            sqnr,
            w_sym=job.fmt.sym,
            notes=["weights fake-quantized (no low-bit kernel); bytes computed from the format"],
        )


class GPTQ(_LlmcMethod):
    name = "gptq"
    label = "GPTQ"
    description = "GPTQ via llm-compressor (GPTQModifier)"
    options_type = GptqOptions

    def recipe(self, job: QuantizeJob, ignore: list[str]) -> list:
        from llmcompressor.modifiers.quantization import GPTQModifier

        opts: GptqOptions = job.options
        return [
            GPTQModifier(
                config_groups=_scheme(job.fmt),
                ignore=ignore,
                dampening_frac=opts.dampening_frac,
                block_size=opts.block_size,
            )
        ]


class AWQ(_LlmcMethod):
    name = "awq"
    label = "AWQ"
    description = "AWQ scaling + round-to-nearest via llm-compressor (AWQModifier)"
    options_type = AwqOptions

    def model_problem(self, loaded: LoadedModel) -> str | None:
        problem = super().model_problem(loaded)
        if problem:
            return problem
        _quiet_llmcompressor()
        from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

        _quiet_llmcompressor()
        cls = type(loaded.model).__name__
        if cls not in AWQ_MAPPING_REGISTRY and cls not in OWN_AWQ_MAPPINGS:
            return f"AWQ has no layer mappings for {cls} (model type {loaded.model_type})"
        return None

    def sqnr_reference_is_original(self) -> bool:
        return False

    def recipe(self, job: QuantizeJob, ignore: list[str]) -> list:
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier
        from llmcompressor.modifiers.transform.awq.mappings import AWQMapping

        opts: AwqOptions = job.options
        own = OWN_AWQ_MAPPINGS.get(type(job.loaded.model).__name__)
        mappings = [AWQMapping(s, list(b)) for s, b in own] if own else None
        return [
            AWQModifier(mappings=mappings, n_grid=opts.n_grid, duo_scaling=opts.duo_scaling),
            QuantizationModifier(config_groups=_scheme(job.fmt), ignore=ignore),
        ]


def _scheme(fmt: Format) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(
        num_bits=fmt.bits,
        type="int",
        symmetric=fmt.sym,
        strategy="group" if fmt.group_size else "channel",
        group_size=fmt.group_size,
    )
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}


def group_problem(layers, fmt: Format) -> str | None:
    """Why groups of ``fmt`` cannot cover these layers (llm-compressor needs the group
    size to divide every input width), or None."""
    if not fmt.group_size:
        return None
    bad = [f"{layer.name} ({layer.shape[1]} inputs)" for layer in layers if layer.shape[1] % fmt.group_size]
    if bad:
        return (
            f"group size {fmt.group_size} does not divide the input width of {len(bad)} layer(s): "
            f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}"
        )
    return None


def _dataset(calib: torch.Tensor):
    from datasets import Dataset

    rows = calib.tolist()
    return Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})


def _module_name(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def forget_session() -> None:
    """Drop what llm-compressor keeps of the model it ran on, so the quantized copy is
    freed with the run's own reference: its global session (``State.model``) and the
    entries its tracer adds to torch.fx's module-level registry of wrapped functions
    (``torch.fx._symbolic_trace._wrapped_fns_to_patch``), each holding a copy of the
    modeling module's globals with a traced module of the copy as ``self``. Entries of
    real modules' globals (torch's own) stay."""
    import torch.fx._symbolic_trace as fx_trace
    from llmcompressor.core import reset_session

    reset_session()
    registry = getattr(fx_trace, "_wrapped_fns_to_patch", None)
    if not isinstance(registry, dict):
        return
    for key in [k for k, g in registry.items() if not _module_globals(g, sys.modules)]:
        del registry[key]


def _module_globals(namespace: dict, modules: dict) -> bool:
    module = modules.get(namespace.get("__name__"))
    return module is not None and getattr(module, "__dict__", None) is namespace


@contextlib.contextmanager
def _no_pinned_memory(device: torch.device):
    """Turn llm-compressor's activation-cache pinning into a no-op while on CPU."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    if device.type != "cpu":
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def _quiet_llmcompressor() -> None:
    """llm-compressor and compressed-tensors log every layer (through loguru); qbayes
    shows its own progress instead."""
    from loguru import logger

    os.environ.setdefault("LLM_COMPRESSOR_LOG_DISABLED", "true")  # oneshot reconfigures its logger
    try:
        logger.level("METRIC")
    except ValueError:  # llm-compressor logs at this level, registered only when its logging is on
        logger.level("METRIC", no=38)
    logger.disable("llmcompressor")
    logger.disable("compressed_tensors")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # tracing chatter
