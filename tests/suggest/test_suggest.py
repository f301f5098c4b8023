"""Which runs to collect next (qbayes.suggest.ranking, qbayes.suggest.gpucost, qbayes suggest)."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.conditioning import (
    anomalies,
    downdate,
    effective_noise_var,
    likelihood_draws,
    observe_gaussian,
    single_reductions,
)
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table
from qbayes.suggest.gpucost import Costs, run_costs
from qbayes.suggest.ranking import MIN_SHARE, greedy, rank, runs_table


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
    a1 = downdate(a, 3, 0.2)
    np.testing.assert_allclose(a1 @ a1.T, _conditional_cov(p, [3], np.array([0.2])), atol=1e-10)
    rows, y, noise = [3, 7, 5], np.array([1.0, -2.0, 0.5]), np.array([0.2, 0.5, 0.1])
    mean, a3 = observe_gaussian(eta.mean(axis=1), a, rows, y, noise)
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
    for k in range(1, 6):  # after each choice, the variance left is that of conditioning on all so far
        after = _conditional_cov(p, [t + c for c in sel.order[:k]], noise[sel.order[:k]])
        assert sel.left[k - 1] == pytest.approx(np.trace(after[:t, :t]), rel=1e-9)
    assert sel.start - sel.left[-1] == pytest.approx(sel.gain.sum(), rel=1e-9)

    # the same run again, and again: each repeat is worth less than the one before
    dup = [2, 7, 8]  # candidate rows of eta rows 5, 10, 11
    only = np.zeros(n_cand)
    only[dup] = 1.0
    costs = Costs(own=np.where(only > 0, 1.0, 1e6))  # everything else unaffordable
    sel = greedy(anom=a, n_targets=t, noise_var=noise, weights=w, costs=costs, budget=3.0, min_share=0.0)
    assert sorted(sel.order.tolist()) == dup
    assert sel.gain[0] > sel.gain[1] > sel.gain[2] > 0
    # by default a run that would remove under MIN_SHARE of the variance is left out, budget or not
    small = greedy(anom=a, n_targets=t, noise_var=noise, weights=w, costs=costs, budget=3.0)
    assert small.gain.size < 3 and np.all(small.gain > MIN_SHARE * small.start)
    np.testing.assert_allclose(small.gain, sel.gain[: small.gain.size])


def test_greedy_keeps_to_the_budget_and_pays_shared_work_once():
    a = anomalies(_joint(3, n=10))
    t, n_cand = 2, 8
    # candidates 0-3 share one quantization (key 0, 5 h), 4-7 each their own (1 h)
    costs = Costs(
        own=np.full(n_cand, 0.5), shared=((np.array([0, 0, 0, 0, 1, 2, 3, 4]), np.array([5.0] * 4 + [1.0] * 4)),)
    )
    paid = [set()]
    costs.pay(1, paid)
    assert costs.marginal(paid).tolist() == [0.5] * 4 + [1.5] * 4
    for budget in (0.4, 1.6, 4.0, 7.0, 100.0):
        sel = greedy(
            anom=a, n_targets=t, noise_var=np.full(n_cand, 0.1), weights=np.ones(t), costs=costs, budget=budget
        )
        assert sel.cost.sum() <= budget + 1e-9
        # what each choice was charged is its marginal price given the choices before it
        again, spent = [set()], []
        for c in sel.order:
            spent.append(costs.marginal(again)[c])
            costs.pay(int(c), again)
        np.testing.assert_allclose(sel.cost, spent)
    assert (
        greedy(
            anom=a, n_targets=t, noise_var=np.full(n_cand, 0.1), weights=np.ones(t), costs=costs, budget=0.4
        ).order.size
        == 0
    )


def test_effective_noise_is_the_t_fisher_information_and_normal_without_dof():
    scale = np.full((2, 3), 0.5)
    assert effective_noise_var(scale=scale, nu=None) == pytest.approx([0.25, 0.25])
    nu = np.array([1.0, 3.0, 1e9])
    want = np.mean(0.25 * (nu + 3) / (nu + 1))
    assert effective_noise_var(scale=scale, nu=nu) == pytest.approx([want, want])


QUERY = {
    "family": "LLaMA-1",
    "model": "LLaMA-7B",
    "params_b": 7.0,
    "method": "GPTQ",
    "w_bits": 3.0,
    "group_size": 128,
    "eval_set": "wikitext2",
}


def test_run_costs_grow_with_size_and_calibration_and_share_work():
    rows = [
        QUERY,
        {**QUERY, "method": "RTN"},
        {**QUERY, "model": "LLaMA-65B", "params_b": 65.0},
        {**QUERY, "eval_set": "c4"},
        {**QUERY, "method": "OmniQuant"},
    ]
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
        runs_table(
            pl.DataFrame([{**{k: v for k, v in QUERY.items() if k != "params_b"}, "params": 7.0}]), where="candidates"
        )


# --- with a fit ----------------------------------------------------------------------


def _rows(**changes) -> dict:
    return {**QUERY, **changes}


def test_a_candidate_identical_to_a_target_teaches_it_most_and_another_family_little(small_fit):
    """A new family: what its rows will do is uncertain through its fresh family effect,
    which only its own runs measure."""
    new = {"family": "Zeta", "model": "Zeta-7B", "arch": "rmsnorm+swiglu", "train_tokens_b": 1000.0}
    targets = runs_table(pl.DataFrame([_rows(**new), _rows(**new, w_bits=4.0)]), where="targets")
    cands = runs_table(
        pl.DataFrame(
            [
                _rows(**new),  # the first target itself
                _rows(**new, w_bits=2.0, group_size=64),  # same family, other format
                _rows(family="OPT", model="OPT-6.7B", params_b=6.7, method="RTN", w_bits=4.0),  # other family
            ]
        ),
        where="candidates",
    )
    r = rank(
        Predictor(small_fit, n_draws=300),
        targets,
        cands,
        costs=Costs(own=np.ones(3)),
        weights=np.array([1.0, 0.0]),
        max_runs=3,
    )
    same, other_format, other_family = r.reduction
    assert same > other_format > other_family
    # the other family's run still informs the shared method and global terms, which a fit of
    # two families pins down loosely: under 15% of what the twin teaches (about 6% here)
    assert other_family < 0.15 * same
    assert r.selection.order[0] == 0
    assert same < r.target_var[0]  # measuring never removes all: the run itself is noisy


def test_likelihood_draws_share_a_new_family_effect_across_rows(small_fit):
    new = {"family": "Zeta", "model": "Zeta-7B", "arch": "rmsnorm+swiglu", "train_tokens_b": 1000.0}
    table = query_table(
        pl.DataFrame([_rows(**new, fp16_ppl=6.0), _rows(**new, w_bits=4.0, fp16_ppl=6.0), _rows(fp16_ppl=6.0)])
    )
    pd = likelihood_draws(Predictor(small_fit, n_draws=300), table)
    assert pd.eta.shape == (3, 300) and pd.scale.shape == (3, 300) and pd.log_shift == small_fit.spec.log_shift
    corr = np.corrcoef(pd.eta)
    assert corr[0, 1] > 0.5  # one family effect, drawn once per sample, moves both rows
    assert pd.eta[0].var() > pd.eta[2].var()  # LLaMA-1 was seen, Zeta was not


# --- the command ---------------------------------------------------------------------

TARGETS = [
    _rows(**{"family": "Zeta", "model": "Zeta-7B", "arch": "rmsnorm+swiglu", "train_tokens_b": 1000.0}),
    _rows(method="AWQ", w_bits=4.0, fp16_ppl=5.68),
]
CANDIDATES = [
    _rows(
        family="Zeta",
        model=f"Zeta-{p:g}B",
        params_b=p,
        arch="rmsnorm+swiglu",
        train_tokens_b=1000.0,
        method=m,
        w_bits=b,
    )
    for p in (1.0, 7.0, 30.0)
    for m in ("RTN", "GPTQ")
    for b in (3.0, 4.0)
]


@pytest.fixture
def files(tmp_path):
    def write(name: str, rows: list[dict]) -> str:
        path = tmp_path / name
        pl.DataFrame(rows).write_csv(path)
        return str(path)

    return write


def test_suggest_cli_ranks_every_candidate_and_keeps_to_the_budget(small_fit_path, files, tmp_path, cli):
    out = tmp_path / "ranked.csv"
    cands = files("cands.csv", [{**r, "run_id": i} for i, r in enumerate(CANDIDATES)])
    r = cli(
        "suggest",
        "--targets",
        files("targets.csv", TARGETS),
        "--candidates",
        cands,
        "--fit",
        small_fit_path,
        "--budget-gpu-hours",
        1.5,
        "--output",
        out,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "Runs to collect next" in r.out and f"wrote {len(CANDIDATES)} ranked candidates" in r.out
    table = pl.read_csv(out)
    assert table.height == len(CANDIDATES) and sorted(table["run_id"].to_list()) == list(range(len(CANDIDATES)))
    chosen = table.filter(pl.col("chosen"))
    assert chosen.height >= 1 and chosen["choice_order"].to_list() == list(range(1, chosen.height + 1))
    assert chosen["cost_at_choice"].sum() <= 1.5
    assert table.filter(~pl.col("chosen"))["choice_order"].null_count() == table.height - chosen.height
    assert (table["var_reduction"] >= 0).all() and (table["cost_gpu_hours"] > 0).all()
    # a Zeta target makes the Zeta runs worth something; the 30B ones cost most
    by_size = table.group_by("params_b").agg(pl.col("cost_gpu_hours").mean()).sort("params_b")
    assert by_size["cost_gpu_hours"].is_sorted()

    r = cli(
        "suggest",
        "--targets",
        files("targets.csv", TARGETS),
        "--candidates",
        cands,
        "--fit",
        small_fit_path,
        "--top",
        2,
        "--output",
        tmp_path / "two.parquet",
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert pl.read_parquet(tmp_path / "two.parquet")["chosen"].sum() == 2


def test_suggest_cli_crosses_a_grid_with_a_manifest(small_fit_path, files, tmp_path, cli):
    from helpers import ROOT

    manifest = files(
        "models.csv",
        [{"path": "models/zeta-1b", "family": "Zeta", "name": "", "params_b": 1.0, "arch": "rmsnorm+swiglu"}],
    )
    out = tmp_path / "ranked.csv"
    r = cli(
        "suggest",
        "--targets",
        files("targets.csv", TARGETS),
        "--grid",
        ROOT / "collectors" / "tiny.toml",
        "--models",
        manifest,
        "--fit",
        small_fit_path,
        "--output",
        out,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    table = pl.read_csv(out)
    # tiny.toml: 9 + 2 + 1 + 1 (method, format) pairs, 2 evaluation sets
    assert table.height == 13 * 2 and set(table["model"]) == {"zeta-1b"}
    assert (
        table.filter(pl.col("grid_config") == "int4-g32-asym")["method"].sort().to_list() == ["awq"] * 2 + ["rtn"] * 2
    )
    assert set(table["eval_set"]) == {"shakespeare", "pystdlib"} and (table["eval_tokens"] == 2048).all()


@pytest.mark.parametrize(
    "case", ["missing", "misspelt_own", "budget", "empty", "targets_missing", "models_missing", "negative_weight"]
)
def test_suggest_cli_refuses_bad_input_and_writes_nothing(case, small_fit_path, files, tmp_path, cli):
    out = tmp_path / "ranked.csv"
    targets, cands, extra = TARGETS, CANDIDATES, []
    if case == "missing":
        cands = [{("wbits" if k == "w_bits" else k): v for k, v in c.items()} for c in CANDIDATES]
        message = r"missing column 'w_bits' \(did you mean 'wbits'\?\)"
    elif case == "misspelt_own":
        cands = [{**c, "gpu_hour": 1.0} for c in CANDIDATES]
        message = r"unknown column 'gpu_hour' \(did you mean 'gpu_hours'\?\)"
    elif case == "budget":
        extra, message = ["--budget-gpu-hours", 0], "--budget-gpu-hours must be > 0, got 0"
    elif case == "empty":
        message = "no candidate runs"
    elif case == "targets_missing":
        targets = [{k: v for k, v in t.items() if k != "family"} | {"familly": "OPT"} for t in TARGETS]
        message = r"targets.csv: missing column 'family' \(did you mean 'familly'\?\)"
    elif case == "models_missing":
        from helpers import ROOT

        models = files("models.csv", [{"path": "m/zeta-1b", "family": "Zeta", "params": 1.0}])
        extra = ["--grid", ROOT / "collectors" / "tiny.toml", "--models", models]
        message = r"models.csv: missing column 'params_b' \(did you mean 'params'\?\)"
    else:
        targets = [{**t, "weight": w} for t, w in zip(TARGETS, (1.0, -2.0))]
        message = r"targets.csv: column 'weight' must hold numbers >= 0 \(rows \[2\]\)"
    cand_path = files("cands.csv", cands)
    if case == "empty":
        pl.DataFrame(schema={c: pl.String for c in CANDIDATES[0]}).write_csv(cand_path)
    source = [] if case == "models_missing" else ["--candidates", cand_path]
    r = cli(
        "suggest", "--targets", files("targets.csv", targets), *source, "--fit", small_fit_path, "--output", out, *extra
    )
    assert r.code == 2
    assert "error:" in r.err and re.search(message, r.err), r.err
    assert not out.exists() and not list(tmp_path.glob(".ranked.csv.*"))
