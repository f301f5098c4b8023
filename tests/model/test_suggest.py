"""Which runs to collect next (qbayes.model.suggest, qbayes.model.gpucost, qbayes suggest)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.design import query_table
from qbayes.model.gpucost import Costs, run_costs
from qbayes.model.suggest import (anomalies, condition, effective_noise_var, greedy, observe, predictor_draws, rank,
                                  runs_table, single_reductions)


def _joint(seed: int, n: int = 12, s: int = 40) -> np.ndarray:
    """Correlated draws (n rows x s draws) with a covariance of full rank n."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n)) @ rng.standard_normal((n, s)) + rng.standard_normal((n, 1))


def _conditional_cov(p: np.ndarray, rows: list[int], noise: np.ndarray) -> np.ndarray:
    """Brute force: Cov after observing rows with noise, P - P_r (P_rr + N)^-1 P_r^T."""
    h = p[:, rows]
    return p - h @ np.linalg.solve(p[np.ix_(rows, rows)] + np.diag(noise), h.T)


def test_single_reduction_equals_the_conditional_covariance():
    a = anomalies(_joint(0))
    p = a @ a.T
    t, noise, w = 4, np.linspace(0.1, 1.0, 8), np.array([1.0, 2.0, 0.5, 0.0])
    got = single_reductions(cross=p[:t, t:], var=np.diag(p)[t:], noise_var=noise, weights=w)
    for c in range(8):
        after = _conditional_cov(p, [t + c], noise[[c]])
        assert got[c] == pytest.approx(w @ (np.diag(p)[:t] - np.diag(after)[:t]), rel=1e-10)


def test_condition_is_the_exact_kalman_covariance_and_observe_the_joint_conditional_mean():
    eta = _joint(1)
    a = anomalies(eta)
    p = a @ a.T
    a1 = condition(a, 3, 0.2)
    np.testing.assert_allclose(a1 @ a1.T, _conditional_cov(p, [3], np.array([0.2])), atol=1e-10)
    rows, y, noise = [3, 7, 5], np.array([1.0, -2.0, 0.5]), np.array([0.2, 0.5, 0.1])
    mean, a3 = observe(eta.mean(axis=1), a, rows, y, noise)
    np.testing.assert_allclose(a3 @ a3.T, _conditional_cov(p, rows, noise), atol=1e-10)
    m0 = eta.mean(axis=1)
    want = m0 + p[:, rows] @ np.linalg.solve(p[np.ix_(rows, rows)] + np.diag(noise), y - m0[rows])
    np.testing.assert_allclose(mean, want, atol=1e-10)


def test_greedy_gains_add_up_to_the_joint_reduction_and_duplicates_show_diminishing_returns():
    eta = _joint(2, n=10)
    eta = np.vstack([eta, eta[5:6], eta[5:6]])  # candidates 5, 10, 11 are one run measured three times
    a = anomalies(eta)
    p = a @ a.T
    t, n_cand = 3, 9
    noise = np.full(n_cand, 0.3)
    w = np.ones(t)
    sel = greedy(anom=a, n_targets=t, noise_var=noise, weights=w, costs=Costs(own=np.ones(n_cand)), max_runs=5)
    assert sel.order.size == 5 and len(set(sel.order.tolist())) == 5
    after = _conditional_cov(p, [t + c for c in sel.order], noise[sel.order])
    assert sel.gain.sum() == pytest.approx(np.trace(p[:t, :t]) - np.trace(after[:t, :t]), rel=1e-9)
    assert sel.start - sel.left[-1] == pytest.approx(sel.gain.sum(), rel=1e-9)
    assert np.all(np.diff(sel.gain) <= 1e-12)  # greedy on a submodular-like gain: never increasing here

    # the same run again, and again: each repeat is worth less than the one before
    dup = [2, 7, 8]  # candidate rows of eta rows 5, 10, 11
    only = np.zeros(n_cand)
    only[dup] = 1.0
    costs = Costs(own=np.where(only > 0, 1.0, 1e6))  # everything else unaffordable
    sel = greedy(anom=a, n_targets=t, noise_var=noise, weights=w, costs=costs, budget=3.0)
    assert sorted(sel.order.tolist()) == dup
    assert sel.gain[0] > sel.gain[1] > sel.gain[2] > 0


def test_greedy_keeps_to_the_budget_and_pays_shared_work_once():
    a = anomalies(_joint(3, n=10))
    t, n_cand = 2, 8
    # candidates 0-3 share one quantization (key 0, 5 h), 4-7 each their own (1 h)
    costs = Costs(own=np.full(n_cand, 0.5), shared=((np.array([0, 0, 0, 0, 1, 2, 3, 4]),
                                                      np.array([5.0] * 4 + [1.0] * 4)),))
    paid = [set()]
    costs.pay(1, paid)
    assert costs.marginal(paid).tolist() == [0.5] * 4 + [1.5] * 4
    for budget in (0.4, 1.6, 4.0, 7.0, 100.0):
        sel = greedy(anom=a, n_targets=t, noise_var=np.full(n_cand, 0.1), weights=np.ones(t), costs=costs,
                     budget=budget)
        assert sel.cost.sum() <= budget + 1e-9
        # what each choice was charged is its marginal price given the choices before it
        again, spent = [set()], []
        for c in sel.order:
            spent.append(costs.marginal(again)[c])
            costs.pay(int(c), again)
        np.testing.assert_allclose(sel.cost, spent)
    assert greedy(anom=a, n_targets=t, noise_var=np.full(n_cand, 0.1), weights=np.ones(t), costs=costs,
                  budget=0.4).order.size == 0


def test_effective_noise_is_the_t_fisher_information_and_normal_without_dof():
    scale = np.full((2, 3), 0.5)
    assert effective_noise_var(scale=scale, nu=None) == pytest.approx([0.25, 0.25])
    nu = np.array([1.0, 3.0, 1e9])
    want = np.mean(0.25 * (nu + 3) / (nu + 1))
    assert effective_noise_var(scale=scale, nu=nu) == pytest.approx([want, want])


QUERY = {"family": "LLaMA-1", "model": "LLaMA-7B", "params_b": 7.0, "method": "GPTQ", "w_bits": 3.0,
         "group_size": 128, "eval_set": "wikitext2"}


def test_run_costs_grow_with_size_and_calibration_and_share_work():
    rows = [QUERY, {**QUERY, "method": "RTN"}, {**QUERY, "model": "LLaMA-65B", "params_b": 65.0},
            {**QUERY, "eval_set": "c4"}, {**QUERY, "method": "OmniQuant"}]
    table = runs_table(pl.DataFrame(rows), where="candidates")
    c = run_costs(table)
    gptq, rtn, big, c4, omni = c.standalone
    assert rtn < gptq < omni and big > 5 * gptq
    assert c4 > gptq  # C4's usual protocol has more tokens than WikiText-2's
    paid = [set() for _ in c.shared]
    c.pay(0, paid)
    assert c.marginal(paid)[3] < 0.5 * c4  # the 7B GPTQ model is quantized already
    faster = run_costs(table, device="h100").standalone
    assert np.all(faster < c.standalone)
    given = run_costs(table, given=np.array([np.nan, 9.0, np.nan, np.nan, np.nan]))
    assert given.standalone[1] == 9.0 and given.standalone[0] == pytest.approx(gptq)


def test_runs_table_needs_no_fp16_and_names_misspelt_columns():
    t = runs_table(pl.DataFrame([QUERY]), where="candidates", own=("gpu_hours",))
    assert t.height == 1 and t["fp16_ppl"].item() > 1
    with pytest.raises(QBayesError, match=r"unknown column 'gpu_hour' \(did you mean 'gpu_hours'\?\)"):
        runs_table(pl.DataFrame([{**QUERY, "gpu_hour": 1.0}]), where="candidates", own=("gpu_hours",))
    with pytest.raises(QBayesError, match=r"missing column 'params_b' \(did you mean 'params'\?\)"):
        runs_table(pl.DataFrame([{**{k: v for k, v in QUERY.items() if k != "params_b"}, "params": 7.0}]),
                   where="candidates")


# --- with a fit ----------------------------------------------------------------------

def _rows(**changes) -> dict:
    return {**QUERY, **changes}


def test_a_candidate_identical_to_a_target_teaches_it_most_and_another_family_little(small_fit):
    """A new family: what its rows will do is uncertain through its fresh family effect,
    which only its own runs measure."""
    new = {"family": "Zeta", "model": "Zeta-7B", "arch": "rmsnorm+swiglu", "train_tokens_b": 1000.0}
    targets = runs_table(pl.DataFrame([_rows(**new), _rows(**new, w_bits=4.0)]), where="targets")
    cands = runs_table(pl.DataFrame([
        _rows(**new),  # the first target itself
        _rows(**new, w_bits=2.0, group_size=64),  # same family, other format
        _rows(family="OPT", model="OPT-6.7B", params_b=6.7, method="RTN", w_bits=4.0),  # other family
    ]), where="candidates")
    r = rank(small_fit, targets, cands, costs=Costs(own=np.ones(3)), weights=np.array([1.0, 0.0]),
             max_runs=3, n_draws=300)
    same, other_format, other_family = r.reduction
    assert same > other_format > other_family
    assert other_family < 0.05 * same
    assert r.selection.order[0] == 0
    assert same < r.target_var[0]  # measuring never removes all: the run itself is noisy


def test_predictor_draws_share_a_new_family_effect_across_rows(small_fit):
    new = {"family": "Zeta", "model": "Zeta-7B", "arch": "rmsnorm+swiglu", "train_tokens_b": 1000.0}
    table = query_table(pl.DataFrame([_rows(**new, fp16_ppl=6.0), _rows(**new, w_bits=4.0, fp16_ppl=6.0),
                                      _rows(fp16_ppl=6.0)]))
    pd = predictor_draws(small_fit, table, n_draws=300)
    assert pd.eta.shape == (3, 300) and pd.scale.shape == (3, 300) and pd.log_shift == small_fit.spec.log_shift
    corr = np.corrcoef(pd.eta)
    assert corr[0, 1] > 0.5  # one family effect, drawn once per sample, moves both rows
    assert pd.eta[0].var() > pd.eta[2].var()  # LLaMA-1 was seen, Zeta was not
