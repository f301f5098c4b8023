"""What a quantization method is: the interface every backend implements.

A method declares what it can do (formats, devices, model types, whether it needs
calibration data, whether it has a real low-bit kernel), reports whether its optional
package is installed, and turns an unquantized model plus a format into a quantized
model, measuring the quantization noise of the weights it changed on the way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch

from qbayes.collect.modelio import LoadedModel
from qbayes.collect.sqnr import SqnrAccumulator
from qbayes.formats import Format


@dataclass(frozen=True)
class NoOptions:
    """For methods without options of their own."""


@dataclass(frozen=True)
class Requirement:
    """An optional package a backend needs: importable module and pip command."""

    module: str
    install: str


@dataclass
class QuantizeJob:
    loaded: LoadedModel
    fmt: Format
    options: object
    calib: torch.Tensor | None  # [samples, seq_len] token ids, for methods that need them
    seed: int


@dataclass
class Quantized:
    """A quantized model and what the method knows about it."""

    model: torch.nn.Module
    group_size: int | None  # group size actually used (weight-majority), None = per channel
    quant_bits: int  # bits storing the quantized layers, scales and zero points included
    quant_weights: int  # number of weights in the quantized layers
    sqnr: SqnrAccumulator
    w_sym: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def w_bits_eff(self) -> float:
        return self.quant_bits / self.quant_weights


class Method:
    """Base class; subclasses set the class attributes and implement :meth:`quantize`."""

    name: str = ""  # registry key used in grids and on the command line
    label: str = ""  # results.method value
    label_suffix: str = ""  # appended to dtype_label, to keep two backends of one method apart
    description: str = ""
    devices: tuple[str, ...] = ("cpu", "cuda")
    needs_calibration: bool = False
    has_kernel: bool = False  # real low-bit matmul: decode speed is measured
    requires: tuple[Requirement, ...] = ()
    options_type: type = NoOptions
    self_check_format: Format | None = None
    self_check_tol: float | None = None  # None: the grid's self_check.tol_nats

    def unavailable(self) -> str | None:
        """Why the method cannot run in this environment (missing package), or None."""
        missing = [r for r in self.requires if importlib.util.find_spec(r.module.split(".")[0]) is None]
        if missing:
            cmds = "; ".join(r.install for r in missing)
            return f"method '{self.name}' is unavailable: install it with: {cmds}"
        return None

    def format_problem(self, fmt: Format) -> str | None:
        """Why the method cannot produce ``fmt``, or None."""
        return None

    def model_problem(self, loaded: LoadedModel) -> str | None:
        """Why the method cannot quantize this model type, or None. ``loaded`` may be a
        skeleton (:func:`~qbayes.collect.modelio.skeleton`: layers on the meta device, no
        weights, no tokenizer)."""
        return None

    def model_format_problem(self, loaded: LoadedModel, fmt: Format) -> str | None:
        """Why the method cannot produce ``fmt`` for this model's layers (e.g. a group size
        that does not divide a layer's width), or None. ``loaded`` may be a skeleton."""
        return None

    def quantize(self, job: QuantizeJob) -> Quantized:
        raise NotImplementedError
