"""Model specs, the shared mean function, and query checking (no sampling here)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model import collapse
from qbayes.model.covariates import covariates
from qbayes.model.encoding import Encoding
from qbayes.model.queries import query_table
from qbayes.model.spec import EFFECT_PREFIXES, available, load_spec

from helpers import assert_spec_refused


def test_shipped_specs_load_and_differ():
    assert {"hierarchical", "pooled"} <= set(available())
    h, p = load_spec("hierarchical"), load_spec("pooled")
    assert "family" in h.effects and "family" not in p.effects
    assert h.hash != p.hash


def test_unknown_model_name_suggests_close_match():
    with pytest.raises(QBayesError, match="did you mean 'hierarchical'"):
        load_spec("hierarchicl")


def test_spec_with_unknown_key_is_refused(tmp_path):
    assert_spec_refused(
        tmp_path,
        'name = "x"\n[priors]\nbits_rat = { mu = 1.0, sigma = 0.5 }\n',
        "unknown key 'bits_rat' \\(did you mean 'bits_rate'\\?\\)",
    )


# every kind of grouping effect part, on an interaction grouping too
ALL_PARTS_SPEC = """
name = "all-parts"
likelihood = "log_student_t"
curvature = "low_bits"
noise = ["low_bits", "per_channel"]
[effects]
family_method = { intercept = true, bits_slope = true, per_channel = true, curvature = true }
[effects.method]
intercept = true
bits_slope = true
per_channel = true
curvature = true
act_slope = true
act_intercept = true
[effects.family]
intercept = true
bits_slope = true
size_slope = true
act_slope = true
act_intercept = true
fixed_sd = { act_slope = 0.3, act_intercept = 0.5 }
"""


@pytest.mark.parametrize("tokens_within, spec_name", [(None, "hierarchical"), ("arch", "hierarchical"), (None, "")])
def test_pymc_likelihood_matches_numpy_mean_function(table, tokens_within, spec_name, tmp_path):
    """The PyMC graph's log-likelihood at a random point equals a NumPy/SciPy Student-t on
    ln(delta + shift) around the NumPy mean function prediction uses, with the NumPy noise
    scale (its noise terms) prediction uses; with ln D centred within designs, also for rows
    whose training tokens are unknown (a latent ln D); and for a spec with every kind of
    effect part (curvature and activation slopes, activation-term shifts included), on rows
    below 4 bits and with quantized activations."""
    from scipy import stats

    from qbayes.model.graph import build_model
    from qbayes.model.mean import mean_degradation, relative_noise
    from qbayes.model.spec import LOG_SHIFT

    if spec_name:
        spec = load_spec(spec_name)
    else:
        (tmp_path / "all-parts.toml").write_text(ALL_PARTS_SPEC)
        spec = load_spec(str(tmp_path / "all-parts.toml"))
    assert spec.noise  # the default model's noise scale varies by row
    sub = table.head(200)
    if not spec_name:
        sub = pl.concat(
            [
                table.filter(pl.col("act_bits") < 16).head(100),
                table.filter(pl.col("w_bits") < 4).sort("w_bits").head(100),
            ]
        )
        assert sub.filter(pl.col("act_bits") <= 6).height > 0 and sub.filter(pl.col("w_bits") < 3).height > 0
    if tokens_within:
        sub = table.filter(pl.col("family").is_in(["LLaMA-1", "Llama-2", "OPT"])).group_by("family").head(60)
        unknown = pl.col("family") == "Llama-2"  # a family without tokens: each model a latent ln D
        sub = sub.with_columns(pl.when(unknown).then(None).otherwise(pl.col("train_tokens_b")).alias("train_tokens_b"))
        assert sub.filter(unknown).height > 0
    # nested groupings (format within method) as a fit has them
    enc = Encoding.from_table(sub, within=spec.within, tokens_within=tokens_within)
    d = covariates(enc.read(sub))
    model = build_model(spec, d, enc, sub["delta"].to_numpy())
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point(random_seed=3).items()}
    outs = model.unobserved_value_vars  # constrained values and deterministics at the point
    fn = model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")
    values = dict(zip([v.name for v in outs], fn(point)))
    # NumPy layout: draws last (one draw here); effects get the extra new-level row
    p = {k: np.asarray(v)[..., None] if np.ndim(v) else np.array([[float(v)]]) for k, v in values.items()}
    for k in [k for k in p if k.startswith(EFFECT_PREFIXES) and k[2:] in spec.effects]:
        p[k] = np.concatenate([p[k], np.zeros((1, 1))])
    missing = np.isnan(d.log_d_c)
    assert missing.any() == bool(tokens_within)
    log_d_missing = None
    if missing.any():
        latent = values["log_tokens_missing"][d.tokens_idx] - d.log_d_shift
        log_d_missing = np.where(missing, latent, 0.0)[:, None]
    if spec.collapse is not None:  # the law's ceiling is each row's collapse level (test_collapse checks the mixture)
        assert not np.isnan(d.log_vocab).any()  # training rows have vocabularies: no population draw is read
        p[collapse.POP_LOG_VOCAB] = np.zeros((1, 1))
        p["ceiling"] = collapse.level(p, collapse.gap_draws(d, p), np)
    mu = mean_degradation(p, d, spec.effects, enc.levels, np, log_d_missing, curvature=spec.curvature)[:, 0]
    y = np.log(sub["delta"].to_numpy() + LOG_SHIFT)
    scale = relative_noise(p, d, spec.noise, np)[:, 0]
    assert np.ptp(scale) > 0
    expected = stats.t.logpdf(y, df=values["nu"], loc=np.log(mu + LOG_SHIFT), scale=scale).sum()
    if spec.collapse is not None:
        prob = collapse.probability(p, d, mu[:, None], spec.collapse, LOG_SHIFT)[:, 0]
        level = np.log(p["ceiling"][:, 0] + LOG_SHIFT)
        law = stats.t.logpdf(y, df=values["nu"], loc=np.log(mu + LOG_SHIFT), scale=scale)
        broken = stats.norm.logpdf(y, loc=level, scale=float(values["collapse_sd"]))
        expected = np.logaddexp(np.log1p(-prob) + law, np.log(prob) + broken).sum()
    logp = model.compile_logp(vars=[model["log_delta"]], sum=True)(point)
    assert np.isfinite(expected)
    assert logp == pytest.approx(expected, rel=1e-8)


GOOD_QUERY = {
    "family": ["OPT"],
    "model": ["OPT-6.7B"],
    "params_b": ["6.7"],
    "method": ["GPTQ"],
    "w_bits": ["3"],
    "group_size": ["128"],
    "eval_set": ["wikitext2"],
    "fp16_ppl": ["10.86"],
}


def test_query_table_casts_and_fills_defaults():
    q = query_table(pl.DataFrame(GOOD_QUERY))
    row = q.row(0, named=True)
    assert row["act_bits"] == 16.0 and row["w_kind"] == "int" and row["train_tokens_b"] is None
    assert row["bits"] == pytest.approx(3 + 19 / 128)
    # GPTQ configurations write per channel as group_size -1: read as empty, no group overhead
    pc = query_table(pl.DataFrame({**GOOD_QUERY, "group_size": ["-1"]})).row(0, named=True)
    assert pc["group_size"] is None and pc["bits"] == 3.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"param_b": ["6.7"], "params_b": None}, "missing column 'params_b' (did you mean 'param_b'?)"),
        ({"w_bits": ["0"]}, "w_bits must be > 0"),
        ({"w_bits": ["17"]}, "w_bits must be <= 16"),
        ({"params_b": ["-1"]}, "params_b must be > 0"),
        ({"fp16_ppl": ["1.0"]}, "fp16_ppl must be > 1"),
        ({"group_size": ["-2"]}, "group_size must be > 0 (empty or -1: one scale per output channel)"),
        ({"w_bits": ["three"]}, "column 'w_bits' has values that are not Float64 in rows [1]"),
        ({"vocab_size": ["1"]}, "vocab_size must be >= 2 tokens (rows [1])"),
        ({"vocab_size": ["32k"]}, "column 'vocab_size' has values that are not Float64 in rows [1]"),
    ],
)
def test_bad_queries_are_refused_with_the_reason(change, message):
    q = dict(GOOD_QUERY)
    for k, v in change.items():
        if v is None:
            q.pop(k)
        else:
            q[k] = v
    with pytest.raises(QBayesError) as exc:
        query_table(pl.DataFrame(q))
    assert message in str(exc.value)


def test_tokens_within_a_design_are_departures_from_its_families_mean(table):
    """spec tokens_within: a family's ln D is measured from the mean over its design's
    families; a family of a design the fit never saw gets no D term at all."""
    from qbayes.model.graph import known_log_tokens

    train = table.filter(~pl.col("family").is_in(["OPT", "Qwen3"]))  # LLaMA-1 and Llama-2 alone in their design
    enc = Encoding.from_table(train, tokens_within="arch")
    fam_ld = {
        f: np.log(train.filter(pl.col("family") == f)["train_tokens_b"]).mean() - np.log(1000.0)
        for f in ("LLaMA-1", "Llama-2")
    }
    assert enc.tokens_centre["rmsnorm+swiglu"] == pytest.approx(np.mean(list(fam_ld.values())))
    assert "layernorm+relu" not in enc.tokens_centre
    q = query_table(
        pl.DataFrame(
            {
                **{k: v * 3 for k, v in GOOD_QUERY.items()},
                "family": ["Llama-2", "Llama-3", "OPT"],
                "arch": ["", "rmsnorm+swiglu", ""],
                "train_tokens_b": ["2000", "15000", "180"],
            }
        )
    )
    d = covariates(enc.read(q))
    centre = enc.tokens_centre["rmsnorm+swiglu"]
    np.testing.assert_allclose(d.log_d_c, [np.log(2.0) - centre, np.log(15.0) - centre, 0.0])
    # without the centring a row's ln D is its own, new design or not
    plain = covariates(Encoding.from_table(train).read(q))
    np.testing.assert_allclose(plain.log_d_c, np.log([2.0, 15.0, 0.18]))
    # unknown tokens: a family the fit saw gets its tokens (Llama-2), one it did not a latent
    # ln D, shifted by the design's mean; for a new design, nothing
    q2 = q.with_columns(pl.lit(None, dtype=pl.Float64).alias("train_tokens_b"))
    d2 = covariates(enc.read(q2))
    assert np.isnan(d2.log_d_c).tolist() == [False, True, False] and d2.log_d_c[2] == 0.0
    assert d2.log_d_c[0] == pytest.approx(fam_ld["Llama-2"] - centre)
    np.testing.assert_allclose(d2.log_d_shift, [centre, centre, np.nan])
    # the population unknown counts are drawn from is of ln D itself, centred or not
    raw = known_log_tokens(covariates(Encoding.from_table(train).read(train)))
    assert raw.size >= 4
    np.testing.assert_allclose(known_log_tokens(covariates(enc.read(train))), raw)
    again = Encoding.from_dict(enc.to_dict())
    assert again.tokens_within == "arch" and again.tokens_centre == enc.tokens_centre


def test_block_design_comes_from_norm_and_mlp(table):
    arch = dict(table.select("family", "arch").unique().iter_rows())
    assert arch["OPT"] == "layernorm+relu" and arch["BLOOM"] == "layernorm+gelu"
    assert arch["LLaMA-1"] == arch["Llama-2"] == "rmsnorm+swiglu"


def test_interaction_levels_pair_family_and_method(table):
    enc = Encoding.from_table(table)
    assert "OPT|RTN" in enc.levels["family_method"] and "rmsnorm+swiglu|GPTQ" in enc.levels["arch_method"]
    # every pair seen is a level, and no pair that never occurs
    pairs = {f"{f}|{m}" for f, m in table.select("family", "method").unique().iter_rows()}
    assert set(enc.levels["family_method"]) == pairs


def test_queries_get_their_familys_block_design_or_their_own(table):
    enc = Encoding.from_table(table.filter(pl.col("family") != "Llama-2"))
    q = query_table(
        pl.DataFrame(
            {
                **{k: v * 4 for k, v in GOOD_QUERY.items()},
                "family": ["LLaMA-1", "Llama-2", "Llama-2", "Llama-2"],
                "arch": ["", "RMSNorm + SwiGLU", "", "layernorm+relu"],
            }
        )
    )
    d = covariates(enc.read(q))
    arch = np.array(enc.levels["arch"] + ("<new>",))[d.idx["arch"]]
    # known family: its design; new family: the design given (any case and spacing), else a new level
    assert arch.tolist() == ["rmsnorm+swiglu", "rmsnorm+swiglu", "<new>", "layernorm+relu"]
    assert d.new_level("family").tolist() == [False, True, True, True]
    # a pair is new when either part is: Llama-2|GPTQ was never seen, LLaMA-1|GPTQ was
    assert d.new_level("family_method").tolist() == [False, True, True, True]
    assert d.new_level("arch_method").tolist() == [False, False, True, False]
    again = Encoding.from_dict(enc.to_dict())
    assert again.family_arch == enc.family_arch and again.family_arch["OPT"] == "layernorm+relu"


def test_low_bits_curvature_bends_only_below_four_bits(table):
    from qbayes.model.mean import SCALAR_TERMS, design_matrix

    spec = load_spec("hierarchical")
    assert spec.curvature == "low_bits"
    enc = Encoding.from_table(table)
    d = covariates(enc.read(table))
    col = SCALAR_TERMS.index("bits_curvature")
    bent = design_matrix(d, spec.effects, enc.levels, spec.curvature)[:, col]
    quad = design_matrix(d, spec.effects, enc.levels)[:, col]
    above = d.bits_c > 0
    assert above.sum() > 50 and np.all(bent[above] == 0) and np.all(quad[above] > 0)
    assert np.array_equal(bent[~above], quad[~above])


def test_row_quantiles_match_numpy():
    from qbayes.model.predict import QUANTILES, row_quantiles

    y = np.random.default_rng(3).standard_t(3, size=(50, 999)).astype(np.float32)
    expected = np.quantile(y, QUANTILES, axis=1)
    got = row_quantiles(y.copy(), QUANTILES)
    assert got.shape == (len(QUANTILES), 50)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_design_rows_slice_every_array(table):
    enc = Encoding.from_table(table)
    d = covariates(enc.read(table))
    part = d.rows(slice(10, 30))
    assert part.n == 20 and part.feats.shape[0] == 20
    assert all(np.array_equal(part.idx[g], d.idx[g][10:30]) for g in d.idx)
    assert np.array_equal(part.bits_c, d.bits_c[10:30])


def test_every_grouping_has_a_report_name():
    from qbayes.model.spec import GROUPINGS
    from qbayes.report.sections.learned import GROUPING_NAMES

    assert set(GROUPING_NAMES) == set(GROUPINGS)


def test_spec_with_unknown_curvature_is_refused(tmp_path):
    assert_spec_refused(
        tmp_path, 'name = "x"\ncurvature = "low_bit"\n', "unknown curvature .*'low_bit'.*did you mean 'low_bits'"
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ('noise = ["low_bit"]', "unknown noise term .*'low_bit'.*did you mean 'low_bits'"),
        ('noise = "low_bits"', "'noise' must be a list"),
        ('likelihood = "student_t"\nnoise = ["low_bits"]', "'noise' terms scale the log_student_t likelihood"),
    ],
)
def test_spec_with_bad_noise_terms_is_refused(tmp_path, line, message):
    assert_spec_refused(tmp_path, f'name = "x"\n{line}\n', message)
