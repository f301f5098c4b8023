"""The fixed parts of the accuracy-given-Δ law, shared by the PyMC graph (fit) and the
NumPy prediction (predict), which must not import PyMC."""

from __future__ import annotations

TAU_NEW = 2.0  # half-normal scale of the excess noise of a task the fit has not seen (its prior)
DELTA_FLOOR = 1e-6  # Δ^alpha at Δ = 0 has no gradient in alpha
