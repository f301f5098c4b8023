"""What a candidate run costs, in GPU hours: rough, documented constants (docs/suggest.md).

A run is: load the model, quantize it, evaluate the quantized model on one evaluation set,
and evaluate the unquantized model on that set (the delta needs both). Work that runs share
is charged once (:class:`Costs`): quantizing a model with one method and format serves
every evaluation set; evaluating the unquantized model on a set serves every format. Times
are for a reference A100 and scale with a device's dense bf16 throughput:

* evaluation: 2 x parameters x tokens FLOPs at ``MFU`` of the device's peak;
* quantization: ``SETUP_HOURS`` plus, per billion parameters, ``LOAD_HOURS_PER_B`` and the
  method's ``QUANT_HOURS_PER_B`` (A100 hours per billion parameters, from the methods'
  papers: GPTQ quantizes a 175B model in ~4 GPU hours, OmniQuant a 7B one in ~1.1 hours).
  A method not in the table is taken as calibration-based (``DEFAULT_QUANT_HOURS_PER_B``).

A run's ``gpu_hours`` given in the candidates file replaces all of this for that run
(charged in full, nothing shared).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.errors import unknown
from qbayes.names import key, key_expr

REFERENCE_DEVICE = "a100"
# dense bf16 peak, TFLOP/s (vendor data sheets, without sparsity)
DEVICE_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "l40s": 362.0, "l4": 121.0}
MFU = 0.4  # share of peak that a batched perplexity evaluation reaches
SETUP_HOURS = 0.02  # start-up, tokenizer, data per quantization job
LOAD_HOURS_PER_B = 0.001  # reading fp16 weights, ~2 GB per billion parameters
RTN_HOURS_PER_B = 0.002  # rounding without calibration
# A100 hours per billion parameters to quantize, by method (respell.key of its name)
QUANT_HOURS_PER_B = {
    **{
        key(m): RTN_HOURS_PER_B
        for m in ("RTN", "llama.cpp-legacy", "llama.cpp-kquant", "quanto", "bitsandbytes", "nf4", "fp8", "hqq", "none")
    },
    key("SmoothQuant"): 0.005,  # activation statistics from a calibration set
    key("GPTQ"): 0.025,
    key("GPTQ-R"): 0.025,
    key("AWQ"): 0.025,
    key("autoawq"): 0.025,
    key("AWQ+GPTQ"): 0.05,
    key("OmniQuant"): 0.15,  # trains clipping and equivalent transforms block by block
}
DEFAULT_QUANT_HOURS_PER_B = 0.05  # other methods: calibration-based, twice GPTQ
# tokens in the usual evaluation protocol of each set (LLaMA tokenizer): WikiText-2 test
# ~340k, C4 256 x 2048 validation sequences, PTB test ~110k; other sets: the collector's
# default budget (grid eval.tokens)
EVAL_TOKENS = {"wikitext2": 340_000, "c4": 524_288, "ptb": 110_000}
DEFAULT_EVAL_TOKENS = 65_536
CONFIG = ("model", "method", "w_kind", "w_bits", "group_size", "act_bits")  # one quantization job


@dataclass(frozen=True)
class Costs:
    """GPU hours of C runs: ``own`` is charged for each run; each entry of ``shared`` is
    (key (C,), hours (C,)): work charged once per key, for the first chosen run with it."""

    own: np.ndarray
    shared: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @property
    def standalone(self) -> np.ndarray:
        """Each run's cost if nothing else were collected."""
        return self.own + sum((h for _, h in self.shared), np.zeros_like(self.own))

    def marginal(self, paid: list[set[int]]) -> np.ndarray:
        """Each run's cost when the shared work in ``paid`` (a set of keys per entry of
        ``shared``) is already done."""
        out = self.own.copy()
        for (keys, hours), done in zip(self.shared, paid):
            out += np.where(np.isin(keys, list(done)), 0.0, hours)
        return out

    def pay(self, c: int, paid: list[set[int]]) -> None:
        for (keys, _), done in zip(self.shared, paid):
            done.add(int(keys[c]))


def speed(device: str) -> float:
    """Throughput of ``device`` relative to the reference A100."""
    if device.lower() not in DEVICE_TFLOPS:
        raise unknown("device", device, DEVICE_TFLOPS)
    return DEVICE_TFLOPS[device.lower()] / DEVICE_TFLOPS[REFERENCE_DEVICE]


def eval_hours(params_b: np.ndarray, tokens: np.ndarray, device: str) -> np.ndarray:
    """GPU hours of one perplexity evaluation: 2 x parameters x tokens FLOPs."""
    flops = 2.0 * params_b * 1e9 * tokens
    return flops / (DEVICE_TFLOPS[device.lower()] * 1e12 * MFU) / 3600.0


def quant_hours_per_b(methods: pl.Series) -> np.ndarray:
    """A100 hours per billion parameters to quantize with each method (matched by respell.key)."""
    keys = methods.to_frame("m").select(key_expr(pl.col("m"))).to_series()
    return keys.replace_strict(QUANT_HOURS_PER_B, default=DEFAULT_QUANT_HOURS_PER_B, return_dtype=pl.Float64).to_numpy()


def _group_ids(table: pl.DataFrame, columns) -> np.ndarray:
    """An integer per row, equal for rows equal in ``columns`` (nulls equal)."""
    return table.select(pl.struct(list(columns)).rank("dense")).to_series().to_numpy().astype(np.int64)


def run_costs(
    table: pl.DataFrame,
    *,
    device: str = REFERENCE_DEVICE,
    eval_tokens: np.ndarray | None = None,
    given: np.ndarray | None = None,
) -> Costs:
    """The GPU hours of each run of a standard table (queries.query_table) on ``device``.
    ``eval_tokens`` (NaN: the set's usual count) and ``given`` (NaN: estimate) hold
    per-run values from the candidates file."""
    fast = speed(device)
    n = table.height
    params = table.get_column("params_b").to_numpy()
    usual = (
        table.get_column("eval_set")
        .replace_strict(EVAL_TOKENS, default=DEFAULT_EVAL_TOKENS, return_dtype=pl.Float64)
        .to_numpy()
    )
    tokens = usual if eval_tokens is None else np.where(np.isnan(eval_tokens), usual, eval_tokens)
    evaluate = eval_hours(params, tokens, device)
    quantize = (SETUP_HOURS + params * (LOAD_HOURS_PER_B + quant_hours_per_b(table.get_column("method")))) / fast
    given = np.full(n, np.nan) if given is None else given
    fixed = ~np.isnan(given)
    own = np.where(fixed, np.nan_to_num(given), evaluate)
    shared = (
        (_group_ids(table, CONFIG), np.where(fixed, 0.0, quantize)),
        (_group_ids(table, ("model", "eval_set")), np.where(fixed, 0.0, evaluate)),
    )
    return Costs(own=own, shared=shared)
