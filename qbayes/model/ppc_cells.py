"""The in-sample check that gates a fit: can the model reproduce the rows it was fitted to,
cell by cell?

A cell is one family, method, weight bit width (with the activation bits where they are
quantized) and grouping (group size, or per channel) with at least :data:`MIN_ROWS` training
rows. For each cell, from the posterior predictive of its own rows:

* ``coverage``: the share of its rows inside their 90% predictive interval; it must be at
  least :data:`COVERAGE_MIN`;
* ``bias``: the median over its rows of (predicted median - observed) on the likelihood's
  scale, ln(delta + shift); its size must stay within the cell's own ``spread``: the larger of
  the standard deviation of its observed ln(delta + shift) and the median half-width of its
  rows' 50% predictive intervals on that scale. A cell offset by more than both the scatter of
  its rows and the uncertainty the model states for them is a misfit, whatever the coverage.

A practitioner's first check is to ask for a number they already know; a cell that fails
here fails that check. ``qbayes fit`` prints the worst cells, ``qbayes report`` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qbayes.model.encoding import cell_keys
from qbayes.model.fitfile import Fit
from qbayes.model.mean import log_target
from qbayes.model.predict import Predictor

MIN_ROWS = 5
COVERAGE_MIN = 0.7
NOMINAL = 0.9
# 500 posterior draws: 25 in each tail of a 90% interval; on the shipped fit seeds 0-5 gave
# 83 of 83 cells, as 1,000 draws did, in half the time (docs/performance.md)
DRAWS = 500


@dataclass(frozen=True)
class Cell:
    """One populated cell and how the fit reproduces it."""

    family: str
    method: str
    bits: str  # "3", "4.5" or "4a8": nominal weight bits, activation bits where quantized
    grouping: str  # "g128" or "per-channel"
    rows: int
    observed_median: float  # delta, nats
    predicted_median: float  # median over the rows of their predictive medians, nats
    coverage: float  # share of rows inside their 90% predictive interval
    bias: float  # median of (predicted median - observed), on ln(delta + shift)
    spread: float  # larger of the observed sd and the predictive 50% half-width, on ln(delta + shift)

    @property
    def covered(self) -> bool:
        return self.coverage >= COVERAGE_MIN

    @property
    def centred(self) -> bool:
        return abs(self.bias) <= self.spread

    @property
    def ok(self) -> bool:
        return self.covered and self.centred

    @property
    def badness(self) -> float:
        """How far the cell is from passing: shortfall of coverage plus excess bias in
        spreads, so the worst cells sort first."""
        return max(COVERAGE_MIN - self.coverage, 0.0) + max(abs(self.bias) / self.spread - 1.0, 0.0)

    @property
    def label(self) -> str:
        return f"{self.family} {self.method} {self.bits}-bit {self.grouping}"


@dataclass(frozen=True)
class CellCheck:
    """Every populated cell of a fit's training rows, worst first."""

    cells: tuple[Cell, ...]
    rows_checked: int  # training rows inside populated cells
    rows_total: int

    @property
    def failed(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if not c.ok)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (
            f"in-sample check: {len(self.cells) - len(self.failed)} of {len(self.cells)} cells pass "
            f"(>= {MIN_ROWS} rows each, {self.rows_checked} of {self.rows_total} rows; "
            f"90% coverage >= {COVERAGE_MIN}, |median error| <= the cell's spread)"
        )

    def lines(self, worst: int = 5) -> list[str]:
        """The summary and the worst cells, one line each."""
        out = [self.summary()]
        for c in self.cells[:worst]:
            mark = "ok  " if c.ok else "FAIL"
            out.append(
                f"  {mark} {c.label}: {c.rows} rows, observed median {c.observed_median:.3g}, predicted "
                f"{c.predicted_median:.3g}, 90% coverage {c.coverage:.2f}, error {c.bias:+.2f} (spread {c.spread:.2f})"
            )
        return out


def check_cells(fit: Fit, *, n_draws: int = DRAWS, seed: int = 0, min_rows: int = MIN_ROWS) -> CellCheck:
    """Posterior predictive of the training rows of ``fit`` in populated cells, summarised per
    cell (rows of smaller cells are not predicted: the offsets of their cells are not drawn)."""
    keys = cell_keys(fit.data).with_row_index("row")
    groups = [(k, g.get_column("row").to_numpy()) for k, g in keys.group_by(["family", "method", "bits", "grouping"])]
    groups = [(k, idx) for k, idx in groups if len(idx) >= min_rows]
    if not groups:
        return CellCheck(cells=(), rows_checked=0, rows_total=fit.data.height)
    picked = np.sort(np.concatenate([idx for _, idx in groups]))
    data = fit.data[picked]
    predictor = Predictor(fit, n_draws=n_draws, seed=seed)
    rows = predictor.prepare(data)
    with np.errstate(over="ignore", invalid="ignore"):
        rep = predictor.delta(rows, rng=np.random.default_rng(seed + 3), independent_noise=True)
    lo, q25, med, q75, hi = np.nanquantile(rep, [(1 - NOMINAL) / 2, 0.25, 0.5, 0.75, (1 + NOMINAL) / 2], axis=1)
    obs = data.get_column("delta").to_numpy().astype(float)
    shift = fit.spec.log_shift
    log_obs, log_med = log_target(obs, shift), log_target(med, shift)
    half50 = (log_target(q75, shift) - log_target(q25, shift)) / 2
    inside = (obs >= lo) & (obs <= hi)
    cells = []
    for key, rows_of in groups:
        idx = np.searchsorted(picked, rows_of)  # the cell's rows among those predicted
        cells.append(
            Cell(
                *map(str, key),
                rows=len(idx),
                observed_median=float(np.median(obs[idx])),
                predicted_median=float(np.median(med[idx])),
                coverage=float(inside[idx].mean()),
                bias=float(np.median(log_med[idx] - log_obs[idx])),
                spread=max(float(np.std(log_obs[idx], ddof=1)), float(np.median(half50[idx]))),
            )
        )
    cells.sort(key=lambda c: (-c.badness, c.coverage, c.label))
    return CellCheck(cells=tuple(cells), rows_checked=len(picked), rows_total=fit.data.height)
