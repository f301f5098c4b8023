"""qbayes: predict, with calibrated uncertainty, how much quantization degrades an LLM."""

__version__ = "0.1.0"
