"""Which runs to collect next, as a table: the work behind ``qbayes suggest`` and
`qbayes.Model.suggest`, one code path for both (docs/suggest.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from qbayes.errors import QBayesError
from qbayes.model import conditioning, known_families, unseen
from qbayes.model.predict import Predictor
from qbayes.suggest.gpucost import DEVICE_TFLOPS
from qbayes.suggest.ranking import (
    CANDIDATE_COLUMNS,
    DEFAULT_RUNS,
    TARGET_COLUMNS,
    Ranking,
    candidate_costs,
    rank,
    ranking_table,
    runs_table,
    target_weights,
)

# notes the command prints when neither side says where its rows come from
SHARED_SOURCE_NOTE = (
    "targets and candidates without a source share one new-study effect, so every run also "
    "teaches about it; give the candidates a source (e.g. your lab's) if the targets are other "
    "studies' numbers"
)


@dataclass
class Suggestion:
    """The ranked candidate runs: ``table`` (the candidates as given, chosen runs first in
    the order chosen, with ``var_reduction``, ``var_reduction_share``, ``cost_gpu_hours``,
    ``reduction_per_gpu_hour``, ``chosen``, ``choice_order``, ``gain_at_choice``,
    ``cost_at_choice``; what ``qbayes suggest --output`` writes), ``ranking`` (the numbers
    behind it: ``ranking.selection.start`` and ``.left`` are the targets' weighted
    variance of ln(Δ + shift) before and after each choice) and ``notes`` for the user.

    Examples:
        >>> import polars as pl, qbayes
        >>> targets = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
        ...                         "format": ["Q3_K_M"], "eval_set": ["wikitext2"]})
        >>> s = qbayes.suggest_runs(targets, targets.with_columns(pl.lit(0.5).alias("gpu_hours")), top=1)
        >>> s.chosen.select("model", "cost_gpu_hours").rows()
        [('Qwen2.5-7B', 0.5)]
    """

    table: Any  # a polars DataFrame, or pandas when the candidates were
    ranking: Ranking
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self):
        """The chosen runs, in the order chosen (the kind of DataFrame ``table`` is)."""
        if isinstance(self.table, pl.DataFrame):
            return self.table.filter(pl.col("chosen"))
        return self.table[self.table["chosen"]]


def suggest_table(
    predictor: Predictor,
    raw_targets: pl.DataFrame,
    raw_candidates: pl.DataFrame,
    *,
    targets_where: str,
    candidates_where: str,
    budget_gpu_hours: float | None = None,
    top: int | None = None,
    device: str,
    new_level: bool = False,
    observed: conditioning.Observed | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Suggestion:
    """Rank the candidate runs ``raw_candidates`` (query layout, optional ``gpu_hours``,
    ``eval_tokens``) by how much measuring each would sharpen the predictions of
    ``raw_targets`` (query layout, optional ``weight``), per GPU hour on ``device``, and
    choose a batch within ``budget_gpu_hours`` (GPU hours) of at most ``top`` runs.
    ``*_where`` name the tables in messages; raises QBayesError on bad input."""
    if budget_gpu_hours is not None and not budget_gpu_hours > 0:
        raise QBayesError(f"--budget-gpu-hours must be > 0, got {budget_gpu_hours:g}")
    devices = {d.lower(): d for d in DEVICE_TFLOPS}
    if not isinstance(device, str) or device.lower() not in devices:
        raise QBayesError(f"unknown device {device!r}; known: {', '.join(sorted(DEVICE_TFLOPS))}")
    device = devices[device.lower()]
    if raw_targets.height == 0:
        raise QBayesError(f"{targets_where}: no targets")
    targets = runs_table(raw_targets, where=targets_where, own=TARGET_COLUMNS)
    weights = target_weights(raw_targets, where=targets_where)
    if raw_candidates.height == 0:
        raise QBayesError(f"{candidates_where}: no candidate runs")
    candidates = runs_table(raw_candidates, where=candidates_where, own=CANDIDATE_COLUMNS)
    costs = candidate_costs(raw_candidates, candidates, where=candidates_where, device=device)
    max_runs = top if top is not None or budget_gpu_hours is not None else DEFAULT_RUNS
    fams = known_families.load()
    for table, raw, where in ((targets, raw_targets, targets_where), (candidates, raw_candidates, candidates_where)):
        new_ok = new_level or unseen.new_ok_values(raw, where)
        unseen.refuse_typos(table, predictor.fit.encoding, where, new_ok, families=fams)
    notes: list[str] = []
    if observed is None and targets["source"].is_null().all() and candidates["source"].is_null().all():
        notes.append(SHARED_SOURCE_NOTE)

    def on_conditioned(cond) -> None:
        notes.extend(conditioning.unmatched(observed, cond.rows.query) + conditioning.report(cond))

    ranking = rank(
        predictor,
        targets,
        candidates,
        costs=costs,
        weights=weights,
        budget=budget_gpu_hours,
        max_runs=max_runs,
        progress=progress,
        observed=observed,
        on_conditioned=on_conditioned,
    )
    return Suggestion(table=ranking_table(raw_candidates, ranking), ranking=ranking, notes=notes)
