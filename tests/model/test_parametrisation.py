"""How effects are parametrised: centred, nested within a parent grouping, and the
per-channel shift of levels seen only per channel (no sampling here)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model.covariates import covariates
from qbayes.model.diagnostics import sampled_vars
from qbayes.model.encoding import Encoding
from qbayes.model.graph import build_model
from qbayes.model.mean import design_matrix, layout, mean_degradation
from qbayes.model.packing import nested_projection
from qbayes.model.queries import query_table
from qbayes.model.spec import EFFECT_PREFIXES, load_spec

from helpers import assert_spec_refused

NESTED = """name = "nested"
rows = "published"
[effects]
family = { intercept = true, bits_slope = true, per_channel = true, size_slope = true, within = "arch" }
arch = { intercept = true, bits_slope = true, size_slope = true }
method = { intercept = true, bits_slope = true, per_channel = true, centred = ["intercept", "bits_slope"] }
arch_method = { intercept = true, within = "method" }
eval_set = { intercept = true, centred = ["intercept"] }
"""


@pytest.fixture()
def nested_spec(tmp_path):
    f = tmp_path / "nested.toml"
    f.write_text(NESTED)
    return load_spec(str(f))


def test_nested_projection_sums_to_zero_within_parents_with_unit_variance():
    parents = ("a", "b", "a", "c", "a", "b")
    p = nested_projection(parents)
    z = np.random.default_rng(0).standard_normal((6, 20000))
    d = p @ z
    for parent in "ab":
        members = [i for i, x in enumerate(parents) if x == parent]
        assert np.allclose(d[members].sum(axis=0), 0.0)
        assert np.allclose(np.diag(p @ p.T)[members], 1.0)  # each effect has the group sd
    assert np.all(d[3] == 0.0)  # "c" has one member: its effect is its parent's


def test_encoding_records_parents_and_refuses_a_grouping_that_is_not_nested(table):
    enc = Encoding.from_table(table, within={"family": "arch", "arch_method": "method"})
    parent = dict(zip(enc.levels["family"], enc.parents["family"]))
    assert parent["OPT"] == "layernorm+relu" and parent["Llama-2"] == "rmsnorm+swiglu"
    assert all(lv.split("|")[1] == m for lv, m in zip(enc.levels["arch_method"], enc.parents["arch_method"]))
    assert Encoding.from_dict(enc.to_dict()).parents == enc.parents
    with pytest.raises(
        QBayesError, match="'method' is not nested in 'family': level 'AWQ' occurs under LLaMA-1, Llama-2, OPT"
    ):
        Encoding.from_table(table, within={"method": "family"})


def test_per_channel_shift_of_a_per_channel_only_method_is_measured_from_that_mode(table):
    enc = Encoding.from_table(table)
    only = set(enc.per_channel_only["method"])
    assert "SqueezeLLM" in only and "RTN" not in only and "GPTQ" not in only
    q = query_table(
        pl.DataFrame(
            {
                "family": ["OPT"] * 4,
                "model": ["OPT-6.7B"] * 4,
                "params_b": ["6.7"] * 4,
                "method": ["SqueezeLLM", "SqueezeLLM", "RTN", "RTN"],
                "w_bits": ["3"] * 4,
                "group_size": ["", "128", "", "128"],
                "eval_set": ["wikitext2"] * 4,
                "fp16_ppl": ["10.86"] * 4,
            }
        )
    )
    d = covariates(enc.read(q))
    assert d.per_channel.tolist() == [1.0, 0.0, 1.0, 0.0]
    # SqueezeLLM's intercept is its per-channel value; a group query moves by -c_method
    assert d.per_channel_by["method"].tolist() == [0.0, -1.0, 1.0, 0.0]


def test_pymc_graph_matches_numpy_mean_with_nested_and_centred_effects(table, nested_spec):
    """The PyMC graph's expected log-degradation at a random point equals the NumPy mean
    function prediction uses, and nested effects sum to zero within their parents."""
    sub = table.filter(pl.col("family").is_in(["OPT", "LLaMA-1", "Llama-2"])).head(400)
    enc = Encoding.from_table(sub, within=nested_spec.within)
    d = covariates(enc.read(sub))
    model = build_model(nested_spec, d, enc, sub["delta"].to_numpy())
    rng = np.random.default_rng(1)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in model.initial_point(random_seed=3).items()}
    outs = model.unobserved_value_vars
    values = dict(
        zip(
            [v.name for v in outs],
            model.compile_fn(outs, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")(point),
        )
    )
    fam = dict(zip(enc.levels["family"], values["a_family"]))
    assert fam["OPT"] == 0.0  # alone in its design
    assert fam["LLaMA-1"] == pytest.approx(-fam["Llama-2"]) and fam["LLaMA-1"] != 0.0
    assert "a_method" in values and "z_a_method" not in values  # centred: sampled itself
    p = {k: np.asarray(v)[..., None] if np.ndim(v) else np.array([[float(v)]]) for k, v in values.items()}
    for k in [k for k in p if k.startswith(EFFECT_PREFIXES) and k[2:] in nested_spec.effects]:
        p[k] = np.concatenate([p[k], np.zeros((1, 1))])
    mu = mean_degradation(p, d, nested_spec.effects, enc.levels, np, curvature=nested_spec.curvature)[:, 0]
    # the Student-t's location, ln(mu + shift), as a function of the value variables
    log_mu = model.replace_rvs_by_values([model["log_delta"].owner.inputs[3]])[0]
    expected = model.compile_fn(log_mu, inputs=model.value_vars, point_fn=True, on_unused_input="ignore")(point)
    assert np.allclose(np.log(mu + nested_spec.log_shift), expected)
    assert design_matrix(d, nested_spec.effects, enc.levels).shape[1] == sum(
        w for _, w in layout(nested_spec.effects, enc.levels)
    )


def test_size_slope_changes_how_a_family_scales_with_parameters_and_nothing_else(table, nested_spec):
    """n_family is a departure from gamma_n: between two sizes of one family, log mu moves by
    -(gamma_n + n_family + n_arch) * (ln N2 - ln N1); another family's sizes do not feel it."""
    enc = Encoding.from_table(table, within=nested_spec.within)
    q = query_table(
        pl.DataFrame(
            {
                "family": ["OPT", "OPT", "LLaMA-1", "LLaMA-1"],
                "model": ["OPT-1.3B", "OPT-13B", "LLaMA-7B", "LLaMA-65B"],
                "params_b": ["1.3", "13", "7", "65"],
                "method": ["GPTQ"] * 4,
                "w_bits": ["4"] * 4,
                "group_size": ["128"] * 4,
                "eval_set": ["wikitext2"] * 4,
                "fp16_ppl": ["14.6", "10.1", "5.68", "3.53"],
            }
        )
    )
    d = covariates(enc.read(q))
    rng = np.random.default_rng(0)
    p = {name: rng.normal(0, 0.2, (width, 1)) for name, width in layout(nested_spec.effects, enc.levels)}
    p.update(gamma_n=np.array([[0.3]]), gamma_d=np.array([[0.0]]), ceiling=np.array([[1e6]]))
    fam = list(enc.levels["family"]) + [None]
    arch = list(enc.levels["arch"]) + [None]

    def log_mu():
        return np.log(mean_degradation(p, d, nested_spec.effects, enc.levels, np)[:, 0])

    before = log_mu()
    p["n_family"] = p["n_family"].copy()
    p["n_family"][fam.index("OPT")] += 0.5
    after = log_mu()
    change = after - before
    assert change[1] - change[0] == pytest.approx(-0.5 * np.log(13 / 1.3), abs=1e-5)  # steeper in N for OPT
    assert np.allclose(change[2:], 0.0)  # LLaMA-1 untouched
    slope = -(before[3] - before[2]) / np.log(65 / 7)
    expected = 0.3 + p["n_family"][fam.index("LLaMA-1")] + p["n_arch"][arch.index("rmsnorm+swiglu")]
    assert slope == pytest.approx(float(expected[0]), abs=1e-5)


CURVED = """name = "curved"
rows = "published"
[effects]
method = { intercept = true, curvature = true, act_slope = true }
family = { intercept = true, act_slope = true }
"""


def test_curvature_and_activation_slope_parts_act_where_they_say_and_nothing_else(table, tmp_path):
    """q_method bends a method's ln mu by q * (bits - 4)^2 below 4 bits and leaves 4 bits and
    more alone; r_family moves ln mu by r * (8 - act_bits) on rows with quantized activations
    below 8 bits, and leaves weight-only and W8A8 rows alone; other levels do not feel either."""
    (tmp_path / "curved.toml").write_text(CURVED)
    spec = load_spec(str(tmp_path / "curved.toml"))
    enc = Encoding.from_table(table)
    rows = [  # method, bits, activation bits
        ("AWQ", "2", "16"),
        ("AWQ", "3", "16"),
        ("AWQ", "4", "16"),
        ("AWQ", "8", "16"),
        ("GPTQ", "2", "16"),
        ("SmoothQuant", "8", "4"),
        ("SmoothQuant", "8", "8"),
    ]
    q = query_table(
        pl.DataFrame(
            {
                "family": ["LLaMA-1"] * 6 + ["OPT"],
                "model": ["LLaMA-7B"] * 6 + ["OPT-6.7B"],
                "params_b": ["7"] * 6 + ["6.7"],
                "method": [r[0] for r in rows],
                "w_bits": [r[1] for r in rows],
                "act_bits": [r[2] for r in rows],
                "group_size": ["128"] * 7,
                "eval_set": ["wikitext2"] * 7,
                "fp16_ppl": ["5.68"] * 6 + ["10.86"],
            }
        )
    )
    d = covariates(enc.read(q))
    assert [k for k, _ in layout(spec.effects, enc.levels) if k.startswith(("q_", "r_"))] == [
        "q_method",
        "r_method",
        "r_family",
    ]
    rng = np.random.default_rng(1)
    p = {name: rng.normal(0, 0.2, (width, 1)) for name, width in layout(spec.effects, enc.levels)}
    # no saturation, no activation term of its own
    p.update(ceiling=np.array([[1e6]]), act_intercept=np.array([[-30.0]]), act_rate=np.array([[0.0]]))
    method = list(enc.levels["method"]) + [None]
    family = list(enc.levels["family"]) + [None]

    def log_mu():
        return np.log(mean_degradation(p, d, spec.effects, enc.levels, np)[:, 0])

    before = log_mu()
    p["q_method"] = p["q_method"].copy()
    p["q_method"][method.index("AWQ")] += 0.5
    change = log_mu() - before
    bits = np.asarray(q["bits"]) - 4
    assert change[:2] == pytest.approx(0.5 * bits[:2] ** 2, abs=1e-5)  # AWQ at 2 and 3 bits (plus group overhead)
    assert np.allclose(change[2:], 0.0, atol=1e-6)  # 4 and 8 bits, and other methods, untouched
    before = log_mu()
    p["r_family"] = p["r_family"].copy()
    p["r_family"][family.index("LLaMA-1")] += 0.25
    change = log_mu() - before
    assert change[5] == pytest.approx(0.25 * 4, abs=1e-5)  # LLaMA-1 at W8A4: 4 activation bits below 8
    assert np.allclose(change[:5], 0.0, atol=1e-6) and change[6] == pytest.approx(0.0, abs=1e-6)  # weight-only; OPT


ACT_SHIFTED = """name = "act-shifted"
rows = "published"
[effects]
method = { intercept = true, act_intercept = true, fixed_sd = { act_intercept = 1.0 } }
family = { intercept = true, act_intercept = true }
"""


def test_activation_term_shifts_act_on_the_activation_term_and_nothing_else(table, tmp_path):
    """u_method shifts the log of the activation term, exp(act_intercept + u - act_rate *
    (act_bits - 4)), of its method's rows with quantized activations: where that term is all
    of the mean, ln mu moves by the shift; where the weight term is all of it, not at all;
    weight-only rows and other methods never. Its columns are in theta (layout) but not in
    the law's design, only in the activation design."""
    (tmp_path / "act.toml").write_text(ACT_SHIFTED)
    spec = load_spec(str(tmp_path / "act.toml"))
    assert spec.effects["method"].fixed_sd == {"act_intercept": 1.0}
    enc = Encoding.from_table(table)
    rows = [("SmoothQuant", "4", "4"), ("SmoothQuant", "8", "8"), ("SmoothQuant", "4", "16"), ("OmniQuant", "4", "4")]
    q = query_table(
        pl.DataFrame(
            {
                "family": ["LLaMA-1"] * 4,
                "model": ["LLaMA-7B"] * 4,
                "params_b": ["7"] * 4,
                "method": [r[0] for r in rows],
                "w_bits": [r[1] for r in rows],
                "act_bits": [r[2] for r in rows],
                "eval_set": ["wikitext2"] * 4,
                "fp16_ppl": ["5.68"] * 4,
            }
        )
    )
    d = covariates(enc.read(q))
    names = [k for k, _ in layout(spec.effects, enc.levels)]
    assert "u_method" in names and "u_family" in names
    col = sum(w for k, w in layout(spec.effects, enc.levels) if k in names[: names.index("u_method")])
    sq = col + list(enc.levels["method"]).index("SmoothQuant")
    assert not design_matrix(d, spec.effects, enc.levels)[:, sq].any()
    assert design_matrix(d, spec.effects, enc.levels, part="act")[:, sq].tolist() == [1.0, 1.0, 0.0, 0.0]
    rng = np.random.default_rng(2)
    p = {name: rng.normal(0, 0.2, (width, 1)) for name, width in layout(spec.effects, enc.levels)}
    p.update(ceiling=np.array([[1e6]]), act_rate=np.array([[0.0]]))
    method = list(enc.levels["method"]) + [None]

    def change(weight_term: float, act_term: float) -> np.ndarray:
        p.update(intercept=np.array([[weight_term]]), act_intercept=np.array([[act_term]]))
        before = np.log(mean_degradation(p, d, spec.effects, enc.levels, np)[:, 0])
        shifted = {**p, "u_method": p["u_method"].copy()}
        shifted["u_method"][method.index("SmoothQuant")] += 0.5
        return np.log(mean_degradation(shifted, d, spec.effects, enc.levels, np)[:, 0]) - before

    assert change(-30.0, 0.0)[:2] == pytest.approx([0.5, 0.5], abs=1e-6)  # the activation term is the mean
    assert np.allclose(change(-30.0, 0.0)[2:], 0.0)  # weight-only row; another method
    assert np.allclose(change(0.0, -30.0), 0.0, atol=1e-9)  # no activation term: nothing to shift


def test_diagnostics_cover_centred_effects_but_not_products():
    import xarray as xr

    post = xr.Dataset(
        {
            name: (("chain", "draw"), np.random.default_rng(0).standard_normal((2, 5)))
            for name in ("a_method", "z_a_family", "a_family", "sd_a_family")
        }
    )
    assert sorted(sampled_vars(post)) == ["a_method", "sd_a_family", "z_a_family"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'family = { intercept = true, within = "arhc" }\narch = { intercept = true }',
            "'within' must name another grouping.*did you mean 'arch'",
        ),
        (
            'family = { intercept = true, within = "arch", centred = ["intercept"] }\narch = { intercept = true }',
            "nested effects .* are non-centred",
        ),
        ('family = { intercept = true, centred = ["bits_slope"] }', "unknown centred effect .* 'bits_slope'"),
        ('family = { intercept = true, centred = "intercept" }', "'centred' must be a list"),
        ('family = { intercept = true, centred = ["size_slope"] }', "unknown centred effect .* 'size_slope'"),
        ("family = { intercept = true, size_slopes = true }", "size_slopes.*did you mean 'size_slope'"),
    ],
)
def test_bad_parametrisation_in_a_spec_is_refused(tmp_path, line, message):
    assert_spec_refused(tmp_path, f'name = "x"\n[effects]\n{line}\n', message)
