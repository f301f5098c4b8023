"""Predictions conditioned on measured rows (qbayes.model.conditioning, ``--observed``):
the fast update against a refit with the same rows, the checks on observed files, and the
commands that take them."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model import conditioning
from qbayes.model.fit import fit_table
from qbayes.model.predict import Predictor
from qbayes.model.spec import load_spec
from qbayes.suggest.ranking import runs_table

from helpers import SMALL, tree_digest

QUERY = ("family", "model", "params_b", "method", "w_bits", "group_size", "eval_set", "fp16_ppl")


@pytest.fixture(scope="module")
def bloom(table) -> pl.DataFrame:
    """BLOOM on WikiText-2: a family the small fits (OPT, LLaMA-1) have not seen."""
    return table.filter((pl.col("family") == "BLOOM") & (pl.col("eval_set") == "wikitext2"))


def _split(bloom: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two revealed rows (the 4-bit RTN rows of the two smallest models) and the rest."""
    seen = (pl.col("method") == "RTN") & (pl.col("w_bits") == 4) & pl.col("model").is_in(["BLOOM-560M", "BLOOM-1.7B"])
    return bloom.filter(seen), bloom.filter(~seen)


def _observed_file(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(*QUERY, (pl.col("delta").exp() * pl.col("fp16_ppl")).alias("ppl"))


def _log_quantiles(pred: pl.DataFrame) -> np.ndarray:
    return np.log(pred.select("delta_q05", "delta_q50", "delta_q95").to_numpy() + 0.01)


def test_fast_update_agrees_with_refit(v2_fit, table, bloom):
    """The importance-sampling update and a refit with the revealed rows give the same
    predictions for the family's other rows within Monte Carlo error, and both differ from
    the fit before conditioning by more than they differ from each other."""
    shown, hidden = _split(bloom)
    observed = conditioning.observed_rows(_observed_file(shown))
    queries = hidden.drop("delta", "doubt")
    predictor = Predictor(v2_fit, n_draws=None, seed=3)
    cond = conditioning.condition(predictor, observed, queries)
    assert cond.update.ess > 30
    fast = _log_quantiles(cond.predictor.predict(cond.rows))
    before = _log_quantiles(predictor.predict(conditioning.as_observed_source(queries)))
    sub = table.filter(pl.col("family").is_in(["OPT", "LLaMA-1"]) & (pl.col("eval_set") == "wikitext2"))
    both = pl.concat([sub, observed.training_rows().select(sub.columns)])
    refit = fit_table(both, load_spec("hierarchical-v2"), SMALL)
    exact = _log_quantiles(Predictor(refit, n_draws=None, seed=3).predict(conditioning.as_observed_source(queries)))
    width = exact[:, 2] - exact[:, 0]
    gap = np.median(np.abs(fast[:, 1] - exact[:, 1]) / width)
    moved = np.median(np.abs(before[:, 1] - exact[:, 1]) / width)
    assert gap < 0.15, (gap, moved)
    assert gap < moved / 2, (gap, moved)
    ratio = np.median((fast[:, 2] - fast[:, 0]) / width)
    assert 0.75 < ratio < 1.33, ratio
    # and the conditioning narrowed the intervals of the family's rows
    assert np.median((before[:, 2] - before[:, 0]) / width) > 1.2


def _obs(**cols) -> pl.DataFrame:
    base = {
        "family": ["NewFam"] * 3,
        "model": ["NewFam-7B"] * 3,
        "params_b": [7.0] * 3,
        "method": ["fp16", "RTN", "GPTQ"],
        "w_bits": [16.0, 4.0, 3.0],
        "group_size": [None, 128, 128],
        "eval_set": ["wikitext2"] * 3,
        "ppl": [6.0, 6.3, 6.8],
    }
    return pl.DataFrame({**base, **cols}, schema_overrides={"group_size": pl.Int64})


def test_observed_rows_take_fp16_from_a_baseline_row():
    o = conditioning.observed_rows(_obs())
    assert o.n == 2
    assert o.table["fp16_ppl"].to_list() == [6.0, 6.0]
    assert np.allclose(o.delta, np.log([6.3 / 6.0, 6.8 / 6.0]))
    assert o.row.tolist() == [2, 3]
    assert set(o.table["source"]) == {conditioning.OBSERVED_SOURCE}


@pytest.mark.parametrize(
    ("cols", "message"),
    [
        ({"ppl": [6.0, 0.0, 6.8]}, r"'ppl' must be a number > 0 \(rows \[2\]\)"),
        ({"ppl": [6.0, float("nan"), 6.8]}, r"'ppl' must be a number > 0 \(rows \[2\]\)"),
        ({"method": ["AWQ", "RTN", "GPTQ"], "w_bits": [4.0, 4.0, 3.0]}, r"no fp16 perplexity for rows \[1, 2, 3\]"),
        (
            {"method": ["fp16", "RTN", "RTN"], "w_bits": [16.0, 4.0, 4.0], "ppl": [6.0, 6.3, 6.4]},
            r"rows \[2, 3\] measure the same configuration with different values",
        ),
    ],
)
def test_bad_observed_rows_are_refused_with_their_row(cols, message):
    with pytest.raises(QBayesError, match=message):
        conditioning.observed_rows(_obs(**cols))


def test_surprising_row_is_reported(small_fit):
    """A 4-bit RTN row 2 nats worse than fp16 is far outside what the fit expects: its
    p-value is small and the report says so; an ordinary one is not flagged."""
    predictor = Predictor(small_fit, n_draws=300)
    queries = conditioning.observed_rows(_obs()).table
    bad = conditioning.observed_rows(_obs(ppl=[6.0, 6.0 * np.exp(2.0), 6.8]))
    cond = conditioning.condition(predictor, bad, queries)
    assert cond.update.p_value[0] < conditioning.SURPRISE_P
    assert any(line.startswith("surprising: observed rows row 2") for line in conditioning.report(cond))
    fine = conditioning.condition(predictor, conditioning.observed_rows(_obs()), queries)
    assert not any(line.startswith("surprising") for line in conditioning.report(fine))


def test_a_fit_made_with_observed_rows_is_not_conditioned_again(small_fit):
    """A fit whose sources include 'observed' (qbayes fit --observed) would count the rows twice."""
    enc = small_fit.encoding
    levels = {**enc.levels, "source": (*enc.levels["source"], conditioning.OBSERVED_SOURCE)}
    refit = dataclasses.replace(small_fit, encoding=dataclasses.replace(enc, levels=levels))
    with pytest.raises(QBayesError, match="already conditions"):
        conditioning.check_fit(Predictor(refit, n_draws=100))


def test_predict_cli_with_observed(cli, small_fit_path, tmp_path):
    obs = tmp_path / "obs.csv"
    _obs().write_csv(obs)
    q = tmp_path / "q.csv"
    _obs().drop("ppl").with_columns(pl.lit(6.0).alias("fp16_ppl")).slice(1).vstack(
        _obs(model=["Other-7B"] * 3, family=["OtherFam"] * 3)
        .drop("ppl")
        .with_columns(pl.lit(6.0).alias("fp16_ppl"))
        .slice(1)
    ).write_csv(q)
    out = tmp_path / "p.csv"
    plain = tmp_path / "plain.csv"
    r = cli("predict", "--fit", small_fit_path, "--input", q, "--output", out, "--observed", obs, "--draws", 300)
    assert r.code == 0, r.err
    assert "effective sample size" in r.err
    p = pl.read_csv(out)
    assert set(conditioning.OUTPUT_COLUMNS) <= set(p.columns)
    assert p["obs_n"].to_list() == [2, 2, 0, 0]
    assert cli("predict", "--fit", small_fit_path, "--input", q, "--output", plain, "--draws", 300).code == 0
    w = lambda t: np.log(t["ppl_q95"] / t["ppl_q05"]).to_numpy()  # noqa: E731
    assert np.all(w(p)[:2] < w(pl.read_csv(plain))[:2])  # the observed model's own rows narrow


def test_predict_cli_refuses_bad_observed_and_writes_nothing(cli, small_fit_path, tmp_path):
    obs = tmp_path / "obs.csv"
    _obs(ppl=[6.0, -1.0, 6.8]).write_csv(obs)
    q = tmp_path / "q.csv"
    _obs().drop("ppl").with_columns(pl.lit(6.0).alias("fp16_ppl")).slice(1).write_csv(q)
    before = tree_digest(tmp_path)
    r = cli("predict", "--fit", small_fit_path, "--input", q, "--output", tmp_path / "p.csv", "--observed", obs)
    assert r.code == 2
    assert "rows [2]" in r.err
    assert tree_digest(tmp_path) == before


def test_suggest_conditions_on_observed_rows_first(small_fit):
    """Rows already measured of a new family leave less for a further run of that family to
    teach: the targets' variance and the same-family candidate's value both fall."""
    from qbayes.suggest.gpucost import Costs
    from qbayes.suggest.ranking import rank, runs_table

    new = {"family": "NewFam", "model": "NewFam-7B", "params_b": 7.0, "eval_set": "wikitext2", "group_size": 128}
    targets = runs_table(pl.DataFrame([{**new, "method": "GPTQ", "w_bits": 3.0}]), where="targets")
    cands = runs_table(pl.DataFrame([{**new, "method": "AWQ", "w_bits": 4.0}]), where="candidates")
    observed = conditioning.observed_rows(_obs())
    predictor = Predictor(small_fit, n_draws=300)
    plain = rank(predictor, targets, cands, costs=Costs(own=np.ones(1)), max_runs=1)
    shown = []
    informed = rank(
        predictor,
        targets,
        cands,
        costs=Costs(own=np.ones(1)),
        max_runs=1,
        observed=observed,
        on_conditioned=shown.append,
    )
    assert len(shown) == 1 and shown[0].update.ess > 30
    assert informed.target_var[0] < 0.8 * plain.target_var[0]
    assert informed.reduction[0] < plain.reduction[0]


def test_reveal_rules_pick_rows_nearest_4_bits_of_the_common_method_and_keep_one_hidden():
    from qbayes.evaluation.crossval import reveal_mask

    rows = pl.DataFrame(
        {
            "model": ["A"] * 5 + ["B"] * 2,
            "method": ["GPTQ", "GPTQ", "GPTQ", "RTN", "RTN", "GPTQ", "RTN"],
            "bits": [3.0, 4.25, 2.0, 4.0, 8.0, 4.25, 4.0],
            "eval_set": ["wikitext2", "c4", "wikitext2", "wikitext2", "wikitext2", "wikitext2", "wikitext2"],
        }
    )
    assert np.flatnonzero(reveal_mask(rows, 1, "nearest4")).tolist() == [1, 5]
    assert np.flatnonzero(reveal_mask(rows, 2, "nearest4")).tolist() == [0, 1, 5]  # B keeps one row hidden
    assert np.flatnonzero(reveal_mask(rows, 1, "rtn")).tolist() == [3, 6]
    assert not reveal_mask(rows, 0, "nearest4").any()
    with pytest.raises(QBayesError, match="reveal rule"):
        reveal_mask(rows, 1, "random")


def test_fit_cli_refuses_bad_observed_rows_before_fitting(cli, tmp_path):
    obs = tmp_path / "obs.csv"
    _obs(method=["AWQ", "RTN", "GPTQ"], w_bits=[4.0, 4.0, 3.0]).write_csv(obs)
    out = tmp_path / "fit.nc"
    r = cli("fit", "--observed", obs, "--out", out)
    assert r.code == 2
    assert "no fp16 perplexity for rows [1, 2, 3]" in r.err
    assert not out.exists()
    assert "--observed" in cli("fit", "--ship", "--observed", obs).err


def test_validation_baselines_train_on_the_revealed_rows(table):
    """crossval.run with --reveal: every K is scored on the rows hidden at the largest K, and
    a baseline given the revealed rows of the held-out family predicts differently."""
    from qbayes.evaluation.crossval import Fold, reveal_mask, run

    sub = table.filter(pl.col("family").is_in(["OPT", "BLOOM"]))
    out = run(
        sub,
        bayes_models=(),
        baselines=("scaling_law_ls",),
        opts=None,
        folds=[Fold("BLOOM", ("OPT",))],
        reveals=(0, 2),
    )
    assert [r.model for r in out] == ["scaling_law_ls K=0", "scaling_law_ls K=2"]
    held = sub.filter(pl.col("family") == "BLOOM")
    assert out[0].y.size == out[1].y.size == int((~reveal_mask(held, 2, "nearest4")).sum())
    assert not np.allclose(out[0].q, out[1].q)


def test_gaussian_form_predicts_what_the_exact_update_teaches(v2_fit):
    """What suggest expects a run to teach (the Gaussian form of conditioning) is what the
    exact update does once the run is measured: a run of a new family, measured at values
    drawn from its own predictive, leaves the target of that family with about the variance
    the Gaussian form promised, and much less than before."""
    new = {"family": "NewFam", "model": "NewFam-7B", "params_b": 7.0, "eval_set": "wikitext2", "group_size": 128}
    rows = pl.DataFrame([{**new, "method": "GPTQ", "w_bits": 3.0}, {**new, "method": "AWQ", "w_bits": 4.0}])
    table = conditioning.as_observed_source(runs_table(rows, where="rows"))
    predictor = Predictor(v2_fit, n_draws=400, seed=1)
    ld = conditioning.likelihood_draws(predictor, table)
    a = conditioning.anomalies(ld.eta)
    noise = conditioning.effective_noise_var(scale=ld.scale[1:], nu=ld.nu)
    before = float(a[0] @ a[0])
    promised = before - float(
        conditioning.single_reductions(
            cross=a[:1] @ a[1:].T, var=np.array([a[1] @ a[1]]), noise_var=noise, weights=np.ones(1)
        )[0]
    )
    rng = np.random.default_rng(0)
    after = []
    for _ in range(6):
        s = rng.integers(ld.eta.shape[1])
        y = ld.eta[1, s] + ld.scale[1, s] * rng.standard_t(ld.nu[s])
        delta = np.exp(y) - ld.log_shift
        observed = conditioning.Observed(table=table.slice(1), delta=np.array([delta]), row=np.array([1]), where="t")
        cond = conditioning.condition(predictor, observed, table.slice(0, 1))
        after.append(conditioning.likelihood_draws(cond.predictor, cond.rows).eta[0].var())
    achieved = float(np.mean(after))
    assert promised < 0.7 * before
    assert 0.5 * promised < achieved < 2.0 * promised
