"""Which runs to collect next: candidates ranked by how much measuring each would sharpen
the predictions of a set of targets (docs/suggest.md).

What a row teaches is decided in one module, qbayes.model.conditioning, for measured rows
(``--observed``: the exact update of the draws) and for rows not measured yet (the candidate
runs here: its Gaussian form). There, what the posterior knows about a row is its location
on the likelihood's scale, eta = ln(mu + log_shift) for the log-scale Student-t (mu itself
for the raw-scale one), one value per posterior draw (conditioning.likelihood_draws). The
draws of eta for targets and candidates, computed together, are approximated by a Gaussian:
their mean and covariance ``A @ A.T`` with the anomalies ``A = (eta - mean) / sqrt(S)``,
(T + C) x S. Measuring candidate c observes ``y_c = eta_c + e_c``, with e_c's variance that
of the likelihood's noise (conditioning.effective_noise_var). Conditioning on y_c lowers target t's variance by
``Cov(eta_t, eta_c)^2 / (Var eta_c + var e_c)`` whatever y_c turns out to be; the
weighted sum over targets is the candidate's value. A batch is chosen greedily by value
per GPU hour, each choice conditioning the Gaussian (a rank-one downdate of its
covariance) so that what a chosen run already teaches is not counted again for the next.

Everything the model knows only through the draws' joint structure (shared family,
method, design, evaluation-set and new-level effects) carries over; what the Gaussian
ignores is listed in docs/suggest.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from qbayes.collect.grid import Grid
from qbayes.collect.manifest import ModelEntry
from qbayes.errors import QBayesError, suggest
from qbayes.formats import parse_format
from qbayes.model import conditioning
from qbayes.model.conditioning import (
    Conditioned,
    Observed,
    anomalies,
    effective_noise_var,
    likelihood_draws,
    single_reductions,
)
from qbayes.model.predict import Predictor
from qbayes.model.queries import QUERY_OPTIONAL, QUERY_REQUIRED, query_table
from qbayes.suggest.gpucost import REFERENCE_DEVICE, Costs, run_costs

DEFAULT_RUNS = 10  # runs chosen when neither a budget nor a number is given
# a run that would remove less than this share of the targets' variance is not chosen,
# however cheap: it would fill a budget with runs that teach nothing
MIN_SHARE = 1e-3
# eta does not depend on the unquantized perplexity, which query_table requires: targets
# and candidates get this in place of theirs
FP16_PLACEHOLDER = 10.0
TARGET_COLUMNS = ("weight",)  # beyond the query columns: the target's weight (default 1)
# beyond the query columns: GPU hours of the run (replaces the estimate), tokens evaluated
CANDIDATE_COLUMNS = ("gpu_hours", "eval_tokens")
# models file of --grid: a collection manifest (path, family, name) with these columns too
MODEL_COLUMNS = ("family", "params_b")
MODEL_OPTIONAL = ("train_tokens_b", "arch")
# grid method names whose results carry another method name (qbayes.collect.methods' labels;
# the others differ from theirs only in case, which the fit's respelling absorbs)
GRID_METHOD_LABELS = {"autoawq": "AWQ"}


def runs_table(df: pl.DataFrame, *, where: str, own: tuple[str, ...] = ()) -> pl.DataFrame:
    """Targets or candidates as the standard table (queries.query_table). Their
    ``fp16_ppl``, which eta does not depend on, is optional and not read. ``own`` names the
    further columns the caller reads itself; a column that looks like a misspelling of one
    of them the table lacks is refused."""
    absent = [c for c in own if c not in df.columns]
    known = {*QUERY_REQUIRED, *QUERY_OPTIONAL, *own}
    problems = [
        f"unknown column '{c}'{suggest(c, absent)}" for c in df.columns if c not in known and suggest(c, absent)
    ]
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    body = df.drop([c for c in (*own, "fp16_ppl") if c in df.columns])
    return query_table(body.with_columns(pl.lit(FP16_PLACEHOLDER).alias("fp16_ppl")), where)


def numeric_column(df: pl.DataFrame, name: str, *, where: str, positive: bool = True) -> np.ndarray | None:
    """Column ``name`` as floats (NaN where empty), None if absent; refuses values that
    are not numbers, or not > 0 (``positive``) or >= 0."""
    if name not in df.columns:
        return None
    s = df.get_column(name)
    if s.dtype == pl.String:
        s = s.str.strip_chars().replace("", None)
    x = s.cast(pl.Float64, strict=False)
    bad = (s.is_not_null() & x.is_null()) | x.is_nan().fill_null(False)
    bad |= (x <= 0 if positive else x < 0).fill_null(False)
    if bad.any():
        rows = (bad.arg_true() + 1).head(5).to_list()
        raise QBayesError(f"{where}: column '{name}' must hold numbers {'>' if positive else '>='} 0 (rows {rows})")
    return x.fill_null(np.nan).to_numpy()


def target_weights(df: pl.DataFrame, *, where: str) -> np.ndarray:
    """The targets' weights: the ``weight`` column (empty: 1), or 1 each."""
    w = numeric_column(df, "weight", where=where, positive=False)
    if w is None:
        return np.ones(df.height)
    w = np.where(np.isnan(w), 1.0, w)
    if not (w > 0).any():
        raise QBayesError(f"{where}: every target has weight 0")
    return w


def candidate_costs(df: pl.DataFrame, table: pl.DataFrame, *, where: str, device: str = REFERENCE_DEVICE) -> Costs:
    """GPU hours of the candidates: the estimate (gpucost.run_costs) unless the
    ``gpu_hours`` column gives them; ``eval_tokens`` replaces a set's usual token count."""
    return run_costs(
        table,
        device=device,
        eval_tokens=numeric_column(df, "eval_tokens", where=where),
        given=numeric_column(df, "gpu_hours", where=where),
    )


def grid_candidates(grid: Grid, models: pl.DataFrame, *, where: str) -> pl.DataFrame:
    """Every model of a collection manifest (with MODEL_COLUMNS) crossed with every
    (method, format) and evaluation set of a collection grid, as candidate rows
    (``format`` the grid's format, ``eval_tokens`` the grid's budget). A format that does
    not parse is refused. Calibration sets and symmetry are not covariates of the model: a
    method's calibration sets are one candidate, and int4-g128 and int4-g128-asym are two
    candidates the model cannot tell apart (the greedy batch takes the second only if a
    repeat is worth its cost)."""
    missing = [c for c in MODEL_COLUMNS if c not in models.columns]
    if missing:
        raise QBayesError(
            f"{where}: "
            + "; ".join(f"missing column '{c}'{suggest(c, models.columns)}" for c in missing)
            + f"; a models file for --grid is a collection manifest (path, family, name) "
            f"with {', '.join(MODEL_COLUMNS)} (optional: {', '.join(MODEL_OPTIONAL)})"
        )
    if "name" not in models.columns and "path" not in models.columns:
        raise QBayesError(f"{where}: needs a 'name' or 'path' column to name the models")
    names = [
        ModelEntry.make(r.get("path") or r["name"], r["family"], r.get("name") or None).name
        for r in models.iter_rows(named=True)
    ]
    base = models.select(*MODEL_COLUMNS, *(c for c in MODEL_OPTIONAL if c in models.columns)).with_columns(
        pl.Series("model", names, dtype=pl.String)
    )
    rows = []
    for m in grid.methods:
        for spec in m.formats:
            f = parse_format(spec)
            for ev in grid.eval.sets:
                rows.append(
                    {
                        "method": GRID_METHOD_LABELS.get(m.name, m.name),
                        "grid_config": f.label,
                        "w_kind": f.kind,
                        "w_bits": float(f.bits),
                        "group_size": f.group_size,
                        "eval_set": ev,
                        "eval_tokens": float(grid.eval.tokens),
                    }
                )
    # grid_config: the collection grid's label (int4-g32-asym), kept so that twins stay apart; not a
    # query `format` column, whose names (data/formats.csv) would set the method
    configs = pl.DataFrame(
        rows,
        schema={
            "method": pl.String,
            "grid_config": pl.String,
            "w_kind": pl.String,
            "w_bits": pl.Float64,
            "group_size": pl.Int64,
            "eval_set": pl.String,
            "eval_tokens": pl.Float64,
        },
    )
    return base.join(configs, how="cross").unique(maintain_order=True)


@dataclass(frozen=True)
class Selection:
    """Candidates chosen, in order (``order``), each with the reduction of the targets'
    weighted variance it brought given the earlier ones (``gain``), the GPU hours it added
    (``cost``, shared work already paid not counted again) and the targets' weighted
    variance left after it (``left``); ``start`` is the variance before any."""

    order: np.ndarray
    gain: np.ndarray
    cost: np.ndarray
    left: np.ndarray
    start: float


def greedy(
    *,
    anom: np.ndarray,
    n_targets: int,
    noise_var: np.ndarray,
    weights: np.ndarray,
    costs: Costs,
    budget: float | None = None,
    max_runs: int | None = None,
    min_share: float = MIN_SHARE,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Selection:
    """Greedy batch: repeatedly take the candidate with the largest variance reduction
    per GPU hour among those that still fit the budget, then condition on it. ``anom``
    ((T + C) x S) holds the targets' anomalies first; ``noise_var`` (C,) and ``costs`` are
    the candidates'. Stops at ``max_runs`` runs, when nothing fits the budget, or when no
    candidate would remove ``min_share`` of the variance the targets had at the start.

    The covariance after k choices is ``A A^T - Z Z^T``, Z's columns being the k rank-one
    downdates; each step reads A once (its column of the covariance) and updates only
    Cov(targets, candidates) and the candidates' variances."""
    t = n_targets
    a = np.asarray(anom, dtype=np.float64)
    n_cand = a.shape[0] - t
    cross = a[:t] @ a[t:].T  # (T, C)
    var = np.einsum("ij,ij->i", a[t:], a[t:])
    left = float(weights @ np.einsum("ij,ij->i", a[:t], a[:t]))
    start = left
    limit = n_cand if max_runs is None else min(max_runs, n_cand)
    z = np.empty((a.shape[0], min(limit, 64)))
    paid: list[set[int]] = [set() for _ in costs.shared]
    spent = 0.0
    taken = np.zeros(n_cand, dtype=bool)
    order, gains, paid_cost, lefts = [], [], [], []
    while len(order) < limit:
        price = costs.marginal(paid)
        ok = ~taken
        if budget is not None:
            ok &= price <= budget - spent + 1e-9
        value = single_reductions(cross=cross, var=var, noise_var=noise_var, weights=weights)
        ok &= value > max(min_share * start, np.finfo(float).tiny)
        if not ok.any():
            break
        ratio = np.where(ok, value / np.maximum(price, np.finfo(float).tiny), -np.inf)
        c = int(np.argmax(ratio))
        k = len(order)
        order.append(c), gains.append(value[c]), paid_cost.append(price[c])
        left -= value[c]
        lefts.append(max(left, 0.0))
        spent += price[c]
        taken[c] = True
        costs.pay(c, paid)
        col = a @ a[t + c] - z[:, :k] @ z[t + c, :k]  # the covariance's column of candidate c
        zc = col / np.sqrt(max(col[t + c], 0.0) + noise_var[c])
        cross -= np.outer(zc[:t], zc[t:])
        var -= zc[t:] ** 2
        if k == z.shape[1]:
            z = np.concatenate([z, np.empty_like(z)], axis=1)
        z[:, k] = zc
        progress(len(order), limit)
    return Selection(
        order=np.array(order, dtype=np.int64),
        gain=np.array(gains),
        cost=np.array(paid_cost),
        left=np.array(lefts),
        start=start,
    )


@dataclass(frozen=True)
class Ranking:
    """Per candidate: ``reduction`` (its value measured alone), ``cost`` (GPU hours alone)
    and the greedy batch (``selection``); ``target_var`` (T,) each target's variance of
    eta, ``weights`` (T,) theirs."""

    reduction: np.ndarray
    cost: np.ndarray
    selection: Selection
    target_var: np.ndarray
    weights: np.ndarray


def rank(
    predictor: Predictor,
    targets: pl.DataFrame,
    candidates: pl.DataFrame,
    *,
    costs: Costs,
    weights: np.ndarray | None = None,
    budget: float | None = None,
    max_runs: int | None = None,
    min_share: float = MIN_SHARE,
    progress: Callable[[int, int], None] = lambda done, total: None,
    observed: Observed | None = None,
    on_conditioned: Callable[[Conditioned], None] = lambda c: None,
) -> Ranking:
    """Rank candidate runs (standard table) by how much each would reduce the weighted
    posterior variance of the targets' eta (standard table), and choose a batch greedily
    under ``budget`` GPU hours and at most ``max_runs`` runs. Rows already ``observed``
    are what the draws are first conditioned on, by the module predict and choose use
    (conditioning.condition, shown to ``on_conditioned``); targets and candidates are then
    read as from the observed rows' source."""
    t = targets.height
    w = np.ones(t) if weights is None else np.asarray(weights, dtype=np.float64)
    both = pl.concat([targets, candidates], how="vertical_relaxed")
    if observed is None:
        pd = likelihood_draws(predictor, both)
    else:
        cond = conditioning.condition(predictor, observed, both)
        on_conditioned(cond)
        pd = likelihood_draws(cond.predictor, cond.rows)
    anom = anomalies(pd.eta)
    noise = effective_noise_var(scale=pd.scale[t:], nu=pd.nu)
    cross = anom[:t] @ anom[t:].T
    var = np.einsum("ij,ij->i", anom, anom)
    reduction = single_reductions(cross=cross, var=var[t:], noise_var=noise, weights=w)
    sel = greedy(
        anom=anom,
        n_targets=t,
        noise_var=noise,
        weights=w,
        costs=costs,
        budget=budget,
        max_runs=max_runs,
        min_share=min_share,
        progress=progress,
    )
    return Ranking(reduction=reduction, cost=costs.standalone, selection=sel, target_var=var[:t], weights=w)


RESULT_COLUMNS = (
    "var_reduction",
    "var_reduction_share",
    "cost_gpu_hours",
    "reduction_per_gpu_hour",
    "chosen",
    "choice_order",
    "gain_at_choice",
    "cost_at_choice",
)


def ranking_table(candidates: pl.DataFrame, r: Ranking) -> pl.DataFrame:
    """``candidates`` (as the user gave them) with RESULT_COLUMNS: chosen runs first, in
    the order chosen, then the rest by reduction per GPU hour."""
    n = candidates.height
    order = np.full(n, None, dtype=object)
    gain, cost_at = np.full(n, np.nan), np.full(n, np.nan)
    sel = r.selection
    order[sel.order] = np.arange(1, sel.order.size + 1)
    gain[sel.order], cost_at[sel.order] = sel.gain, sel.cost
    total = max(sel.start, np.finfo(float).tiny)
    res = pl.DataFrame(
        {
            "var_reduction": r.reduction,
            "var_reduction_share": r.reduction / total,
            "cost_gpu_hours": r.cost,
            "reduction_per_gpu_hour": r.reduction / np.maximum(r.cost, np.finfo(float).tiny),
            "chosen": [o is not None for o in order],
            "choice_order": pl.Series(order.tolist(), dtype=pl.Int64),
            "gain_at_choice": pl.Series(gain).fill_nan(None),
            "cost_at_choice": pl.Series(cost_at).fill_nan(None),
        }
    )
    out = pl.concat([candidates, res], how="horizontal")
    return out.sort(["choice_order", "reduction_per_gpu_hour"], descending=[False, True], nulls_last=True)
