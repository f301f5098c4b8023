"""The collapse regime of a [collapse] spec (qbayes/model/collapse.py): the spec table, the
mixture's density in the PyMC graph against the NumPy one prediction and conditioning use,
and what a small fitted mixture predicts (``collapse_fit``, tests/model/conftest.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.model import collapse
from qbayes.model.covariates import covariates
from qbayes.model.encoding import Encoding
from qbayes.model.predict import Predictor
from qbayes.model.spec import load_spec

from helpers import assert_spec_refused

HEAD = 'name = "x"\nlikelihood = "log_student_t"\n'


def test_collapse_table_parses_and_leaves_other_specs_hashes_alone():
    v3d, v3a = load_spec("hierarchical-v3d"), load_spec("hierarchical-v3a")
    assert v3d.collapse is not None and v3d.collapse.by == {"method": 1.0}
    assert v3a.collapse is None and '"collapse"' not in v3a.to_json()  # fits of v3a keep their hash
    assert v3d.effects == v3a.effects
    assert type(v3d).from_json(v3d.to_json()) == v3d


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\nlikelihood = "student_t"\n[collapse]\n', "log_student_t likelihood only"),
        (HEAD + "[collapse]\nlog_kapa = { mu = 0.0, sigma = 0.3 }\n", "unknown key 'log_kapa'.*log_kappa"),
        (HEAD + "[collapse]\nby = { famly = 1.0 }\n", "unknown grouping.*famly.*family"),
        (HEAD + "[collapse]\nby = { family = -1.0 }\n", "'by' must map groupings to positive sds"),
        (HEAD + "[collapse]\nkappa_by = { family = 0 }\n", "'kappa_by' must map groupings to positive sds"),
        (HEAD + "[collapse]\nkappa_by = { famly = 0.1 }\n", "unknown grouping.*kappa_by.*famly.*family"),
    ],
)
def test_a_bad_collapse_table_is_refused(tmp_path, text, message):
    assert_spec_refused(tmp_path, text, message)


def test_kappa_by_parses_and_leaves_the_hash_of_specs_without_it_alone():
    default, v3i = load_spec("hierarchical"), load_spec("hierarchical-v3i")
    assert v3i.collapse.kappa_by == {"family": 0.15} and default.collapse.kappa_by == {}
    assert '"kappa_by"' not in default.to_json() and '"kappa_by"' in v3i.to_json()
    # nor the activation-term shifts' switch and prior: fits of the default keep their hash
    assert '"act_intercept": false' not in default.to_json() and '"act_intercept_sd"' not in default.to_json()
    assert type(v3i).from_json(v3i.to_json()) == v3i
    assert collapse.effect_names(v3i.collapse) == {"collapse_method": "method", "collapse_kappa_family": "family"}


def test_mixture_density_integrates_to_one_and_is_the_law_without_collapse():
    from scipy import stats

    y = np.linspace(-12.0, 8.0, 40001)[:, None]
    nu, loc, scale = 3.0, np.log(0.2), 0.4
    const = stats.t.logpdf(0.0, df=nu) + np.log(1.0)  # log normaliser of a unit Student-t at 0
    args = dict(loc=loc, scale=scale, nu=nu, const=const, col_loc=np.log(9.0), col_sd=0.15)
    dens = np.exp(collapse.log_density(y, prob=0.3, **args))[:, 0]
    assert np.trapezoid(dens, y[:, 0]) == pytest.approx(1.0, abs=2e-3)
    law = collapse.log_density(y, prob=0.0, **args)[:, 0]
    assert law == pytest.approx(stats.t.logpdf(y[:, 0], df=nu, loc=loc, scale=scale), rel=1e-9)


@pytest.mark.parametrize("name", ["hierarchical-v3d", "hierarchical-v3j"])
def test_pymc_mixture_matches_the_numpy_density(table, name):
    """The graph's log-likelihood of a [collapse] spec at a random point equals the NumPy
    mixture (collapse.log_density) around the NumPy mean with each row's collapse level as
    ceiling, with the collapse probability of collapse.probability: what prediction and
    conditioning compute. v3j adds activation-term shifts per method and family and a
    collapse level per family (kappa_by)."""
    from scipy import stats

    from qbayes.model.graph import build_model
    from qbayes.model.mean import mean_degradation, relative_noise
    from qbayes.model.spec import LOG_SHIFT

    spec = load_spec(name)
    sub = pl.concat(
        [
            table.filter(pl.col("w_bits") <= 2).head(120),
            table.filter(pl.col("w_bits") >= 3).head(80),
            table.filter(pl.col("act_bits") < 16).head(60),
        ]
    )
    enc = Encoding.from_table(sub, within=spec.within)  # nested groupings (format within method) as a fit has them
    d = covariates(enc.read(sub))
    model = build_model(spec, d, enc, sub["delta"].to_numpy())
    assert "ceiling" not in model.named_vars  # tied to the collapse level
    rng = np.random.default_rng(1)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point(random_seed=4).items()}
    outs = model.unobserved_value_vars
    fn = model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")
    values = dict(zip([v.name for v in outs], fn(point)))
    p = {k: np.asarray(v)[..., None] if np.ndim(v) else np.array([[float(v)]]) for k, v in values.items()}
    effects = [k for k in p if k[:2] in ("a_", "b_", "c_", "u_") and k[2:] in spec.effects]
    for k in effects + list(collapse.effect_names(spec.collapse)):
        p[k] = np.concatenate([p[k], np.zeros((1, 1))])  # the new-level row (unused: every level is seen)
    gap = np.maximum(d.log_vocab - d.log_fp16, collapse.MIN_GAP)[:, None]
    p["ceiling"] = collapse.level(p, gap, np, d, spec.collapse)
    if spec.collapse.kappa_by:  # the level differs by family beyond the gap
        assert np.ptp(np.log(p["ceiling"] / gap)) > 0.01
    if any("u" in e.kinds for e in spec.effects.values()):  # and the activation term by method and family
        assert np.ptp(p["u_method"]) > 0.01 and np.ptp(p["u_family"]) > 0.01
    mu = mean_degradation(p, d, spec.effects, enc.levels, np, curvature=spec.curvature)
    prob = collapse.probability(p, d, mu, spec.collapse, LOG_SHIFT)
    assert 0 < prob.min() and prob.max() < 1 and np.ptp(prob) > 0.01
    y = np.log(sub["delta"].to_numpy() + LOG_SHIFT)[:, None]
    nu = values["nu"]
    const = stats.t.logpdf(0.0, df=nu)
    scale = relative_noise(p, d, spec.noise, np)
    expected = collapse.log_density(
        y, np.log(mu + LOG_SHIFT), scale, nu, const, np.log(p["ceiling"] + LOG_SHIFT), p["collapse_sd"], prob
    ).sum()
    logp = model.compile_logp(vars=[model["log_delta"]], sum=True)(point)
    assert np.isfinite(expected)
    assert logp == pytest.approx(expected, rel=1e-8)


def test_a_collapse_model_refuses_training_rows_without_a_vocabulary(table):
    """Its collapse level needs ln V for every training row: a row without one (a model
    neither the models table nor the known families give a size for) stops the build."""
    from qbayes.errors import QBayesError
    from qbayes.model.graph import build_model

    sub = table.head(50).with_columns(
        pl.lit("Mystery").alias("family"), pl.lit(None, dtype=pl.Float64).alias("vocab_size")
    )
    enc = Encoding.from_table(sub)
    d = covariates(enc.read(sub))
    with pytest.raises(QBayesError, match="50 rows have none.*vocab_size"):
        build_model(load_spec("hierarchical-v3d"), d, enc, sub["delta"].to_numpy())


def test_population_of_vocabulary_sizes():
    m, sd = collapse.population({"a": 32000.0, "b": 32000.0, "c": 151936.0, "d": 256000.0})
    logs = np.log([32000.0, 151936.0, 256000.0])  # distinct sizes, each once
    assert m == pytest.approx(logs.mean()) and sd == pytest.approx(np.std(logs, ddof=1))
    assert collapse.population({"a": 50272.0})[1] == 0.5


def test_collapsed_rows_get_a_high_collapse_probability_and_hold_rows_a_low_one(collapse_fit):
    """In sample: rows that collapsed (delta > 8 nats) get a far higher p_collapse than 4-bit
    rows, which are near 0; where a collapse is likely, the predictive given no collapse sits
    below the whole predictive."""
    rows = collapse_fit.data
    pred = Predictor(collapse_fit, n_draws=300).predict(rows.drop("delta", "doubt", strict=False))
    p = pred["p_collapse"].to_numpy()
    delta = rows["delta"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    # the fixture's short chains move the collapsed rows' median between 0.48 and 0.53 from
    # seed to seed (and with the float rounding of the graph), the 4-bit rows' near 0.004
    collapsed, hold = np.median(p[delta > 8]), np.median(p[rows["w_bits"].to_numpy() >= 4])
    assert collapsed > 0.3 and hold < 0.02 and collapsed > 20 * hold
    # likely collapses: their median is the collapse's, above what the law (saturating below
    # the collapse level) gives if they hold
    likely = pred.filter(pl.col("p_collapse") > 0.6)
    assert likely.height > 0 and (likely["delta_hold_q50"] < likely["delta_q50"]).all()
    assert (pred["ppl_hold_q05"] <= pred["ppl_hold_q50"]).all() and (pred["ppl_hold_q50"] <= pred["ppl_hold_q95"]).all()


def test_a_query_without_a_known_vocabulary_draws_one(collapse_fit):
    """A family neither the fit nor the table of known families knows, without vocab_size,
    takes ln V from the population of known sizes; a family the table knows takes its size;
    a larger vocabulary means a higher collapse level, so a higher expected degradation."""
    q = collapse_fit.data.filter(pl.col("delta") > 8).head(1).drop("delta", "doubt", strict=False)
    q = q.with_columns(
        pl.lit("Newfam").alias("family"),
        pl.lit("Newfam-7B").alias("model"),
        pl.lit(None, pl.Float64).alias("vocab_size"),
    )
    pr = Predictor(collapse_fit, n_draws=300)
    unknown = pr.prepare(q)
    assert np.isnan(unknown.covariates.log_vocab[0])
    gemma = pr.prepare(q.with_columns(pl.lit("Gemma-2").alias("family")))
    assert gemma.covariates.log_vocab[0] == pytest.approx(np.log(256000.0))

    def expected(vocab: float) -> float:
        return float(np.mean(pr.expected(pr.prepare(q.with_columns(pl.lit(vocab).alias("vocab_size"))))))

    assert expected(2048.0) < float(np.mean(pr.expected(unknown))) < expected(256000.0)


def test_predict_cli_prints_the_collapse_and_the_hold_interval(collapse_fit_path, cli):
    r = cli(
        "predict",
        "--fit",
        collapse_fit_path,
        "--family",
        "LLaMA-1",
        "--params-b",
        7,
        "--method",
        "RTN",
        "--w-bits",
        2,
        "--fp16-ppl",
        5.68,
    )
    assert r.code == 0, r.err
    assert "P(collapse) " in r.out and "if it does not collapse: perplexity median" in r.out


def test_choose_shows_the_collapse_probability(collapse_fit_path, cli, tmp_path):
    out = tmp_path / "choose.csv"
    args = ["choose", "--fit", collapse_fit_path, "--family", "LLaMA-1", "--candidate", "LLaMA-7B:7:5.68"]
    args += ["--method", "RTN", "--w-bits", 2, "--w-bits", 4, "--group-size", "per-channel", "--budget-gb", 20]
    r = cli(*args)
    assert r.code == 0, r.err
    assert "P(collapse)" in r.out
    r = cli(*args, "--output", out)
    assert r.code == 0, r.err
    table = pl.read_csv(out)
    two, four = (table.filter(pl.col("w_bits") == b)["p_collapse"][0] for b in (2.0, 4.0))
    assert two > four
    assert table.filter(pl.col("method") == "fp16")["p_collapse"].null_count() == 1


def test_the_collapse_line_gives_the_hold_interval_only_where_a_collapse_is_plausible():
    from qbayes.cli.predict import collapse_line

    row = {"ppl_hold_q05": 6.0, "ppl_hold_q50": 6.5, "ppl_hold_q95": 7.0}
    assert collapse_line({**row, "p_collapse": 0.35}).startswith("P(collapse) 0.35; if it does not collapse")
    assert collapse_line({**row, "p_collapse": 0.004}) == "P(collapse) below 0.01"
    assert collapse_line({**row, "p_collapse": None}) is None


def test_a_family_collapses_at_its_own_level_and_a_new_family_draws_one(collapse_fit):
    """kappa_by family: the collapse level over the gap, kappa, differs between the fitted
    families per draw, and a family the fit has not seen draws its own around their mean, so
    its kappa spreads wider across draws than a seen family's."""
    from qbayes.model.predict import law_params

    q = collapse_fit.data.filter(pl.col("delta") > 8).head(1).drop("delta", "doubt", strict=False)
    q = pl.concat([q.with_columns(pl.lit(f).alias("family")) for f in ("OPT", "LLaMA-1", "Newfam")])
    q = q.with_columns(pl.lit(32000.0).alias("vocab_size"))  # one gap for all three
    pr = Predictor(collapse_fit, n_draws=400)
    d = pr.prepare(q).covariates
    kappa = law_params(collapse_fit, d, pr.draws)["ceiling"] / collapse.gap_draws(d, pr.draws.p)
    log_k = np.log(kappa.astype(np.float64))
    assert np.std(log_k[0] - log_k[1]) > 0.01  # OPT and LLaMA-1 differ per draw
    assert np.std(log_k[2]) > np.std(log_k[1])  # a new family is less certain
    assert "collapse_kappa_family" in collapse_fit.posterior


def test_a_new_method_with_quantized_activations_draws_an_activation_shift(collapse_fit):
    """act_intercept on method: a W4A4 row of a method the fit has not seen takes a fresh
    shift of the activation term, so its predictive is wider than a seen method's at the
    same row; a weight-only row of the new method has no activation term to shift."""
    sq = collapse_fit.data.filter((pl.col("method") == "SmoothQuant") & (pl.col("act_bits") == 4)).head(1)
    assert sq.height == 1 and "u_method" in collapse_fit.posterior
    q = pl.concat([sq, sq.with_columns(pl.lit("NewQuant").alias("method"))]).drop("delta", "doubt", strict=False)
    pr = Predictor(collapse_fit, n_draws=400)
    rows = pr.prepare(q)
    log_mu = np.log(pr.mean(rows).astype(np.float64))
    assert np.std(log_mu[1]) > np.std(log_mu[0]) + 0.1


def test_observed_rows_of_a_new_method_update_its_activation_shift(collapse_fit):
    """Conditioning on W4A4 rows of a method the fit has not seen updates that method's
    activation-term shift (an effect of the activation term's exponent, not of the law's
    linear predictor) and moves its other W4A4 predictions toward what was measured."""
    from qbayes.model import conditioning

    sq = collapse_fit.data.filter((pl.col("method") == "SmoothQuant") & (pl.col("act_bits") == 4))
    new = sq.with_columns(pl.lit("NewQuant").alias("method"))
    shown, hidden = new.head(2), new.slice(2, 2).drop("delta", "doubt", strict=False)
    measured = shown.with_columns(pl.lit(9.0).alias("delta"))  # far worse than SmoothQuant
    pr = Predictor(collapse_fit, n_draws=400, seed=2)
    together = pr.prepare(pl.concat([measured.drop("delta", "doubt", strict=False), hidden]))
    d = together.covariates.rows(slice(0, 2))
    units = conditioning._units(pr, d)
    k = units.names.index(("u_method", 0))
    assert not units.loading[:, k].any() and units.act_loading[:, k].all()
    update = conditioning.update(pr, d, measured["delta"].to_numpy())
    assert ("u_method", 0) in update.units
    before = np.median(pr.predict(together)["delta_q50"].to_numpy()[2:])
    after = np.median(pr.with_draws(update.draws).predict(together)["delta_q50"].to_numpy()[2:])
    assert after > 1.5 * before
