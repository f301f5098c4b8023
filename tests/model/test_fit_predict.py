"""Fitting, the fit file's checks, and prediction through the CLI, on a small real fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import xarray as xr
from scipy import stats

from qbayes.errors import QBayesError
from qbayes.model import fitfile
from qbayes.model.predict import Predictor
from qbayes.model.queries import query_table
from qbayes.model.samplers import DEFAULT_SAMPLER
from qbayes.model.spec import load_spec


def test_fit_records_provenance_and_diagnostics(small_fit, small_fit_path):
    a = xr.open_datatree(small_fit_path, engine="h5netcdf").attrs
    assert a["format"] == "qbayes-fit" and a["model"] == "hierarchical"
    assert a["spec_hash"] == small_fit.spec.hash and len(small_fit.info.data_hash) == 16
    assert small_fit.info.seed == 7 and small_fit.info.sampler == DEFAULT_SAMPLER
    conv = dataclasses.asdict(small_fit.info.convergence)
    assert {"max_rhat", "min_ess_bulk", "divergences"} <= set(conv)
    post = small_fit.posterior
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == 150
    assert set(small_fit.encoding.levels["family"]) == {"OPT", "LLaMA-1"}
    # the model learned that fewer bits hurt more (1/gamma > 0 with certainty)
    assert float((post["bits_rate"] > 0).mean()) == 1.0


def test_fit_file_round_trip_keeps_training_data(small_fit_path, small_fit):
    again = fitfile.load(small_fit_path)
    assert again.data.equals(small_fit.data)
    assert again.data.get_column("group_size").dtype == pl.Int64
    assert again.data["group_size"].null_count() > 0  # per-channel rows survive as nulls


def test_corrupted_fit_is_refused(small_fit_path, tmp_path):
    tree = xr.open_datatree(small_fit_path, engine="h5netcdf").load()
    post = tree["posterior"].to_dataset()
    post["bits_rate"] = post["bits_rate"] + 0.5  # tampered draws, attributes unchanged
    tree["posterior"] = xr.DataTree(post)
    bad = tmp_path / "tampered.nc"
    tree.to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(QBayesError, match="posterior draws do not match their checksum"):
        fitfile.load(bad)


def test_fits_from_an_older_format_are_refused_with_advice(small_fit_path, tmp_path):
    tree = xr.open_datatree(small_fit_path, engine="h5netcdf").load()
    tree.attrs["format_version"] = fitfile.FORMAT_VERSION - 1
    old = tmp_path / "old.nc"
    tree.to_netcdf(old, engine="h5netcdf")
    with pytest.raises(QBayesError, match="written by an older qbayes.*refit"):
        fitfile.load(old)


def test_non_fit_files_are_refused(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n not really")
    with pytest.raises(QBayesError, match="not a qbayes fit"):
        fitfile.load(junk)
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("a", np.arange(3.0))}).to_netcdf(other, engine="h5netcdf")
    with pytest.raises(QBayesError, match="not a qbayes fit"):
        fitfile.load(other)


def _queries(**over) -> pl.DataFrame:
    base = {
        "family": "OPT",
        "model": "OPT-6.7B",
        "params_b": 6.7,
        "train_tokens_b": 180.0,
        "method": "GPTQ",
        "w_bits": 3.0,
        "group_size": 128,
        "act_bits": 16.0,
        "eval_set": "wikitext2",
        "fp16_ppl": 10.86,
    }
    base.update(over)
    return pl.DataFrame({k: [v] for k, v in base.items()})


def test_fewer_bits_predict_higher_perplexity(small_fit):
    q = query_table(pl.concat([_queries(w_bits=b) for b in (2.0, 3.0, 4.0, 8.0)]))
    pred = Predictor(small_fit, n_draws=300, seed=1).predict(q)
    med = pred["ppl_q50"].to_numpy()
    assert np.all(np.diff(med) < 0), med
    # quantiles are ordered and bracket the median
    qs = pred.select("ppl_q05", "ppl_q25", "ppl_q50", "ppl_q75", "ppl_q95").to_numpy()
    assert np.all(np.diff(qs, axis=1) >= 0)
    assert np.all(qs[:, 2] >= 10.86 * 0.99)


def test_unseen_family_is_flagged_and_wider(small_fit):
    q = query_table(pl.concat([_queries(), _queries(family="NewFam", model="NewFam-7B")]))
    pred = Predictor(small_fit, n_draws=600, seed=2).predict(q)
    assert pred["new_family"].to_list() == [False, True]
    width = np.log(pred["ppl_q95"].to_numpy()) - np.log(pred["ppl_q05"].to_numpy())
    assert width[1] > width[0]


def test_block_design_is_flagged_only_where_the_model_uses_it(arch_fit):
    q = query_table(
        pl.concat(
            [
                _queries(family="NewFam", model="NewFam-7B", arch="RMSNorm+SwiGLU"),
                _queries(family="NewFam", model="NewFam-7B", arch="mamba+none"),
            ],
            how="diagonal",
        )
    )
    pred = Predictor(arch_fit, n_draws=300, seed=2).predict(q)
    assert pred["new_family"].to_list() == [True, True]
    # LLaMA-1 (in the small fit) is LLaMA-style; no family had a mamba block
    assert "arch" in arch_fit.spec.effects and pred["new_arch"].to_list() == [False, True]
    assert pred["arch"].to_list() == ["RMSNorm+SwiGLU", "mamba+none"]  # the query is returned as given
    # the same posterior read through a model without design effects: no design is new to it
    pooled = dataclasses.replace(arch_fit, spec=load_spec("pooled"))
    assert Predictor(pooled, n_draws=300, seed=2).predict(q)["new_arch"].to_list() == [False, False]


def test_training_tokens_move_only_a_known_designs_predictions(arch_fit):
    """A spec with tokens_within measures ln D within block designs: ten times the tokens raise a new
    LLaMA-style family's mean degradation by gamma_d * ln 10 (draw by draw, below the ceiling),
    while for a design the fit never saw D has no term at all."""
    from qbayes.model.covariates import covariates
    from qbayes.model.predict import draws_from_fit, mean_draws

    assert arch_fit.spec.tokens_within == "arch"
    rows = [
        _queries(family="NewFam", model="NewFam-7B", arch=arch, train_tokens_b=tokens, w_bits=4.0)
        for arch in ("rmsnorm+swiglu", "mamba+none")
        for tokens in (300.0, 3000.0)
    ]
    d = covariates(arch_fit.encoding.read(query_table(pl.concat(rows))))
    draws = draws_from_fit(arch_fit, n=200, seed=4)
    log_mu = np.log(mean_draws(arch_fit, d, draws).astype(np.float64))
    gamma_d = draws.p["gamma_d"][0].astype(np.float64)
    assert np.median(gamma_d) > 0.2
    ratio = (log_mu[1] - log_mu[0]) / (gamma_d * np.log(10.0))
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(log_mu[3], log_mu[2])


def test_new_level_draws_carry_the_unknown_population_mean(arch_fit):
    """A fresh level of a zero-sum grouping with K seen levels is drawn with sd * sqrt(1 + 1/K):
    the seen levels estimate the population mean only to sd / sqrt(K). A nested grouping does
    the same within the row's parent level: in the small fit OPT and LLaMA-1 are each alone in
    their design, so a new family of either design gets sqrt(2), one of a new design 1. The
    draws hold unit-scale effects; each row's scale enters through its design matrix."""
    from qbayes.model.covariates import covariates
    from qbayes.model.mean import design_matrix, layout
    from qbayes.model.predict import draws_from_fit

    draws = draws_from_fit(arch_fit, n=None, seed=3, dtype=np.float64)
    levels, parents = arch_fit.encoding.levels, arch_fit.encoding.parents
    assert len(levels["eval_set"]) == 1 and "family" in parents and "method" not in parents
    for g in ("eval_set", "method", "family"):
        z = draws.p[f"a_{g}"][-1] / draws.p[f"sd_a_{g}"][0]
        assert z.size == 300 and np.std(z) == pytest.approx(1.0, rel=0.12), g
    q = query_table(
        pl.concat(
            [
                _queries(family="NewFam", model="NewFam-7B", arch=arch, method="NewMethod", eval_set="c4")
                for arch in ("rmsnorm+swiglu", "layernorm+relu", "mamba+none")
            ]
        )
    )
    d = covariates(arch_fit.encoding.read(q))
    np.testing.assert_allclose(d.new_scale["eval_set"], np.sqrt(2.0))
    np.testing.assert_allclose(d.new_scale["method"], np.sqrt(1 + 1 / len(levels["method"])))
    np.testing.assert_allclose(d.new_scale["family"], [np.sqrt(2.0), np.sqrt(2.0), 1.0])
    x = design_matrix(d, arch_fit.spec.effects, levels, arch_fit.spec.curvature)
    names = [name for name, k in layout(arch_fit.spec.effects, levels) for _ in range(k)]
    new_family_column = names.index("a_family") + len(levels["family"])
    np.testing.assert_allclose(x[:, new_family_column], d.new_scale["family"])
    assert names[new_family_column] == "a_family" and names[new_family_column + 1] != "a_family"


def test_predict_cli_file_round_trip(small_fit_path, tmp_path, cli):
    rows = pl.concat(
        [_queries(w_bits=4.0), _queries(method="BrandNewMethod"), _queries(eval_set="c4", group_size=None)]
    )
    src = tmp_path / "q.csv"
    rows.write_csv(src)
    out = tmp_path / "p.parquet"
    r = cli("predict", "--fit", small_fit_path, "--input", src, "--output", out, "--draws", 200)
    assert r.code == 0, r.err
    pred = pl.read_parquet(out)
    assert pred.height == 3 and pred["method"].to_list() == ["GPTQ", "BrandNewMethod", "GPTQ"]
    for c in (
        "ppl_q05",
        "ppl_q25",
        "ppl_q50",
        "ppl_q75",
        "ppl_q95",
        "ppl_mean",
        "delta_q50",
        "new_family",
        "new_arch",
        "new_method",
        "new_eval_set",
    ):
        assert c in pred.columns
    assert pred["new_method"].to_list() == [False, True, False]
    assert pred["new_eval_set"].to_list() == [False, False, True]  # the fixture saw wikitext2 only


def test_predict_cli_single_query_prints_table(small_fit_path, cli):
    r = cli(
        "predict",
        "--fit",
        small_fit_path,
        "--family",
        "OPT",
        "--params-b",
        13,
        "--train-tokens-b",
        180,
        "--method",
        "AWQ",
        "--w-bits",
        3,
        "--group-size",
        128,
        "--fp16-ppl",
        10.13,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "perplexity" in r.out and "median degradation" in r.out
    r = cli(
        "predict",
        "--fit",
        small_fit_path,
        "--family",
        "Qwen",
        "--arch",
        "rmsnorm+swiglu",
        "--params-b",
        7,
        "--method",
        "GPTQ",
        "--w-bits",
        4,
        "--group-size",
        128,
        "--fp16-ppl",
        6.5,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "new family" in r.out and "new arch" not in r.out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.rename({"params_b": "param_b"}), "missing column 'params_b' (did you mean 'param_b'?)"),
        (lambda d: d.with_columns(pl.lit(0.0).alias("w_bits")), "w_bits must be > 0"),
        (lambda d: d.with_columns(pl.lit(20.0).alias("w_bits")), "w_bits must be <= 16"),
        (lambda d: d.with_columns(pl.lit(-7.0).alias("params_b")), "params_b must be > 0"),
        (lambda d: d.with_columns(pl.lit(0.9).alias("fp16_ppl")), "fp16_ppl must be > 1"),
        (lambda d: d.rename({"group_size": "group_sz"}), "unknown column 'group_sz' (did you mean 'group_size'?)"),
        (
            lambda d: d.with_columns(pl.lit(-2).alias("group_size")),
            "group_size must be > 0 (empty or -1: one scale per output channel)",
        ),
        (lambda d: d.with_columns(pl.lit(9.9).alias("ppl_q50")), "column(s) ppl_q50 are what predict writes"),
    ],
)
def test_predict_cli_bad_queries_leave_no_output(small_fit_path, tmp_path, cli, edit, message):
    src = tmp_path / "q.csv"
    edit(_queries()).write_csv(src)
    out = tmp_path / "p.csv"
    r = cli("predict", "--fit", small_fit_path, "--input", src, "--output", out)
    assert r.code == 2 and message in r.err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_predict_cli_returns_columns_it_does_not_use(small_fit_path, tmp_path, cli):
    """Ids, notes and observed values ride along; a column close to a query column is not
    mistaken for one when that column is there (model_id beside model)."""
    src = tmp_path / "q.csv"
    q = pl.concat([_queries(), _queries(w_bits=4.0)]).with_columns(
        pl.Series("model_id", ["a", "b"]), pl.Series("observed_ppl", [11.5, 11.0])
    )
    q.write_csv(src)
    out = tmp_path / "p.csv"
    r = cli("predict", "--fit", small_fit_path, "--input", src, "--output", out, "--draws", 200)
    assert r.code == 0, r.err
    assert "not used for prediction, returned as given: model_id, observed_ppl" in r.err
    pred = pl.read_csv(out)
    assert pred["model_id"].to_list() == ["a", "b"] and pred["observed_ppl"].to_list() == [11.5, 11.0]
    assert pred["ppl_q50"][0] > pred["ppl_q50"][1]  # 3 bits worse than 4


def test_predict_cli_refuses_a_non_fit(tmp_path, cli):
    src = tmp_path / "q.csv"
    _queries().write_csv(src)
    fake = tmp_path / "fake.nc"
    fake.write_text("hello")
    r = cli("predict", "--fit", fake, "--input", src, "--output", tmp_path / "p.csv")
    assert r.code == 2 and "not a qbayes fit" in r.err and not (tmp_path / "p.csv").exists()


def test_fit_cli_fails_on_bad_convergence_unless_allowed(tmp_path, cli):
    """Ten draws cannot reach bulk ESS 400: the fit must fail loudly, or pass with --allow-bad-fit."""
    args = [
        "fit",
        "--exclude-family",
        "OPT",
        "--exclude-family",
        "LLaMA-1",
        "--exclude-family",
        "BLOOM",
        "--draws",
        10,
        "--tune",
        10,
        "--chains",
        2,
    ]
    r = cli(*args, "--out", tmp_path / "bad.nc")
    assert r.code == 2 and "fit failed convergence checks" in r.err and "ESS" in r.err
    r = cli(*args, "--out", tmp_path / "bad2.nc", "--allow-bad-fit")
    assert r.code == 0 and (tmp_path / "bad2.nc").exists() and "--allow-bad-fit" in r.err


def test_fit_cli_unknown_family_suggests(cli, tmp_path):
    r = cli("fit", "--exclude-family", "Lama-2", "--out", tmp_path / "x.nc")
    assert r.code == 2 and "did you mean 'Llama-2'" in r.err


def test_fit_refuses_a_target_accept_out_of_range(tmp_path, cli):
    out = tmp_path / "never.nc"
    r = cli("fit", "--target-accept", 1.5, "--out", out)
    assert r.code != 0 and "--target-accept" in r.err and "0.5<=x<=0.999" in r.err
    assert not out.exists()


def test_fit_refuses_a_spec_with_a_misspelled_tokens_within(tmp_path, cli):
    """tokens_within names a grouping of families: a misspelling is refused by name, with
    the close match, before any data is read, and nothing is written."""
    spec = tmp_path / "bad-tokens.toml"
    spec.write_text(
        'name = "bad-tokens"\nrows = "published"\ntokens_within = "archh"\n[effects]\narch = { intercept = true }\n'
    )
    out = tmp_path / "never.nc"
    r = cli("fit", "--model", spec, "--out", out)
    assert r.code == 2
    assert "unknown tokens_within grouping" in r.err and "'archh' (did you mean 'arch'?)" in r.err
    assert not out.exists() and list(tmp_path.iterdir()) == [spec]


def test_fit_refuses_a_spec_whose_nesting_the_data_break(tmp_path, cli):
    """Methods are not nested in families (AWQ was reported for three): the fit stops
    before sampling, names the level, and writes nothing."""
    spec = tmp_path / "bad-nesting.toml"
    spec.write_text(
        'name = "bad-nesting"\nrows = "published"\n[effects]\nfamily = { intercept = true }\n'
        'method = { intercept = true, within = "family" }\n'
    )
    out = tmp_path / "never.nc"
    r = cli("fit", "--model", spec, "--out", out)
    assert r.code == 2 and "grouping 'method' is not nested in 'family': level 'AWQ' occurs under" in r.err
    assert not out.exists()


def test_fit_refuses_a_grouping_the_data_have_no_level_of(tmp_path, cli):
    """Models whose table lacks norm and mlp have no block design: a spec with design effects
    stops before sampling with the grouping named (PyMC used to fail inside its transforms),
    and writes nothing."""
    from qbayes.db import store

    from helpers import SHIPPED_DB

    db = store.load(SHIPPED_DB)
    data = tmp_path / "no-design"
    store.save(
        dataclasses.replace(
            db,
            models=db.models.with_columns(
                pl.lit(None, dtype=pl.String).alias("norm"), pl.lit(None, dtype=pl.String).alias("mlp")
            ),
        ),
        data,
    )
    spec = tmp_path / "design.toml"
    spec.write_text('name = "design"\nrows = "published"\n[effects]\narch = { intercept = true }\n')
    out = tmp_path / "never.nc"
    r = cli("fit", "--data", data, "--model", spec, "--out", out)
    assert r.code == 2, r.err
    assert "model 'design' has arch effects, but no training row has a level of it" in r.err
    assert "norm and mlp" in r.err and not out.exists()


def test_a_new_family_takes_its_design_from_the_known_families(arch_fit):
    """Llama-3 is not in the fit, but its design is in data/known_families.csv: predicted as
    a new family of the LLaMA-style design the fit saw in LLaMA-1, exactly as when the query
    names the design; a family in no table is a new design."""
    llama3 = dict(family="Llama-3", model="Llama-3-8B", params_b=8.0, train_tokens_b=15000.0, method="AWQ")
    q = query_table(
        pl.concat(
            [
                _queries(**llama3),
                _queries(**llama3, arch="rmsnorm+swiglu"),
                _queries(family="NewFam", model="NewFam-7B"),
                _queries(),
            ],
            how="diagonal",
        )
    )
    pred = Predictor(arch_fit, n_draws=300, seed=5).predict(q)
    assert pred["new_family"].to_list() == [True, True, True, False]
    assert pred["new_arch"].to_list() == [False, False, True, False]
    assert pred["block_design"].to_list() == ["rmsnorm+swiglu", "rmsnorm+swiglu", None, "layernorm+relu"]
    assert pred["block_design_from"].to_list() == ["known_families", "query", None, "fit"]
    # alone and with one seed, the row whose design came from the table and the row that named
    # it get the same draws, so the same prediction; with no design known it changes
    one = Predictor(arch_fit, n_draws=300, seed=5).predict(q[0])
    named = Predictor(arch_fit, n_draws=300, seed=5).predict(q[1])
    np.testing.assert_allclose(one["ppl_q50"].to_numpy(), named["ppl_q50"].to_numpy())
    unnamed = Predictor(arch_fit, n_draws=300, seed=5).predict(q[0].with_columns(pl.lit("NewFam").alias("family")))
    assert unnamed["new_arch"].item() and unnamed["ppl_q50"].item() != pytest.approx(one["ppl_q50"].item())


def test_predict_cli_says_where_a_design_came_from(arch_fit_path, cli):
    args = (
        "predict",
        "--fit",
        arch_fit_path,
        "--params-b",
        8,
        "--train-tokens-b",
        15000,
        "--method",
        "AWQ",
        "--w-bits",
        3,
        "--group-size",
        128,
        "--fp16-ppl",
        6.14,
        "--draws",
        200,
    )
    r = cli(*args, "--family", "Llama-3")
    assert r.code == 0, r.err
    assert "new family" in r.out and "new arch" not in r.out
    assert "block design rmsnorm+swiglu: Llama-3's, from qbayes's table of known families" in r.out
    r = cli(*args, "--family", "Mamba-2")
    assert r.code == 0, r.err
    assert "new arch" in r.out and "block design of Mamba-2 unknown" in r.out
    assert not any(line.startswith("training tokens") for line in r.out.splitlines())  # given by the query
    no_tokens = [a for a in args if a not in ("--train-tokens-b", 15000)]
    r = cli(*no_tokens, "--family", "Llama-3")
    assert r.code == 0, r.err
    assert "training tokens 15000B: Llama-3's, from qbayes's table of known families" in r.out
    r = cli(*no_tokens, "--family", "OPT")
    assert r.code == 0, r.err
    assert "training tokens 180B: OPT's, as the fit saw them" in r.out
    r = cli(*no_tokens, "--family", "Mamba-2")  # a new design has no D term: nothing to impute
    assert r.code == 0, r.err
    assert "training tokens" not in r.out
    r = cli(*no_tokens, "--family", "NewLlama", "--arch", "rmsnorm+swiglu")
    assert r.code == 0, r.err
    assert "training tokens imputed from the fitted population" in r.out
    assert "training tokens of NewLlama-8B unknown; give --train-tokens-b" in r.out


def test_a_query_without_training_tokens_gets_its_familys(small_fit):
    """Llama-3's tokens come from the table of known families, OPT's from the fit; each row
    predicts exactly as when the query gives that count. A family in neither is imputed, and
    so was Llama-3 before the table had tokens: 15T is far above the fitted population of
    ln D (OPT's 0.18T, LLaMA-1's 1-1.4T), so its degradation was predicted lower."""
    llama3 = dict(family="Llama-3", model="Llama-3-8B", params_b=8.0, method="AWQ")
    q = query_table(
        pl.concat(
            [
                _queries(**llama3, train_tokens_b=None),
                _queries(**llama3),
                _queries(train_tokens_b=None),
                _queries(family="NewFam", model="NewFam-7B", arch="rmsnorm+swiglu", train_tokens_b=None),
            ],
            how="diagonal_relaxed",
        ).with_columns(pl.Series("train_tokens_b", [None, 15000.0, None, None]))
    )
    pred = Predictor(small_fit, n_draws=300, seed=6).predict(q)
    assert pred["train_tokens_from"].to_list() == ["known_families", "query", "fit", None]
    assert pred["train_tokens_b_used"].to_list() == [15000.0, 15000.0, pytest.approx(180.0), None]
    assert pred["tokens_imputed"].to_list() == [False, False, False, True]
    assert q["train_tokens_b"].null_count() == 3  # the query is not altered
    alone = [Predictor(small_fit, n_draws=300, seed=6).predict(q[i])["ppl_q50"].item() for i in range(2)]
    assert alone[0] == pytest.approx(alone[1], rel=1e-6)
    no_table = dataclasses.replace(small_fit, encoding=dataclasses.replace(small_fit.encoding, known_tokens={}))
    imputed = Predictor(no_table, n_draws=300, seed=6).predict(q[0])
    assert imputed["tokens_imputed"].item() and imputed["train_tokens_from"].item() is None
    assert imputed["ppl_q50"].item() < alone[0]


def test_a_query_spelled_differently_is_predicted_as_the_level_the_fit_knows(
    small_fit, small_fit_path, arch_fit, cli, tmp_path
):
    q = query_table(pl.concat([_queries(), _queries(family="opt", method="gptq", eval_set="WikiText-2")]))
    pred = Predictor(small_fit, n_draws=300, seed=3).predict(q)
    assert pred["new_family"].to_list() == [False, False] and pred["new_method"].to_list() == [False, False]
    assert pred["new_eval_set"].to_list() == [False, False]
    assert Predictor(arch_fit, n_draws=300, seed=3).predict(q)["block_design_from"].to_list() == ["fit", "fit"]
    np.testing.assert_allclose(pred["ppl_q50"][0], pred["ppl_q50"][1], rtol=0.2)  # same cell, own draws
    r = cli(
        "predict",
        "--fit",
        small_fit_path,
        "--family",
        "opt",
        "--params-b",
        6.7,
        "--method",
        "gptq",
        "--w-bits",
        3,
        "--group-size",
        128,
        "--fp16-ppl",
        10.86,
        "--draws",
        200,
    )
    assert r.code == 0, r.err
    assert "read family 'opt' as 'OPT'" in r.err and "read method 'gptq' as 'GPTQ'" in r.err
    assert "new family" not in r.out and "new method" not in r.out


def test_two_new_families_get_independent_effects(small_fit):
    """Each distinct unseen level draws its own effect: two new families in one table are not
    tied draw by draw, while one new family asked twice is; and each new family on its own
    has the predictive distribution it has alone."""
    from qbayes.model.covariates import covariates
    from qbayes.model.predict import draws_from_fit, mean_draws

    fams = ("NewFamA", "NewFamB", "NewFamA", "NewFamC")
    q = query_table(pl.concat([_queries(family=f, model=f"{f}-7B") for f in fams]))
    draws = draws_from_fit(small_fit, n=None, seed=8)  # all 300
    log_mu = np.log(mean_draws(small_fit, covariates(small_fit.encoding.read(q)), draws).astype(np.float64))
    np.testing.assert_array_equal(log_mu[0], log_mu[2])  # the same family
    r = np.corrcoef(log_mu[[0, 1, 3]])
    assert r[0, 1] < 0.95 and r[0, 2] < 0.95 and r[1, 2] < 0.95
    alone = np.log(mean_draws(small_fit, covariates(small_fit.encoding.read(q[1])), draws).astype(np.float64))[0]
    # two samples of one distribution (300 draws each, fresh normals apart): a two-sample KS test
    # at p 1e-4 fails by chance once in 10,000 runs, where a fixed tolerance on quantiles ignored
    # their Monte Carlo error (the draws share each sd, which only makes them closer)
    assert stats.ks_2samp(log_mu[1], alone).pvalue > 1e-4
    # chunking the rows does not change a row's draws
    d = covariates(small_fit.encoding.read(q))
    np.testing.assert_allclose(
        np.log(mean_draws(small_fit, d.rows(slice(3, 4)), draws).astype(np.float64))[0], log_mu[3], rtol=0, atol=1e-5
    )  # float32 sums in another order


def test_a_loaded_fit_predicts_as_the_fit_it_was_saved_from(small_fit, small_fit_path):
    q = query_table(pl.concat([_queries(method="gptq"), _queries(eval_set="WikiText-2", w_bits=4.0)]))
    loaded = Predictor.load(small_fit_path, n_draws=200, seed=4)
    in_memory = Predictor(small_fit, n_draws=200, seed=4)
    assert loaded.predict(q).equals(in_memory.predict(q))
    # the table is read once per prepare, and what was respelled is kept for the command line
    rows = loaded.prepare(q)
    assert rows.read.table["method"].to_list() == ["GPTQ", "GPTQ"]
    assert rows.read.table["eval_set"].to_list() == ["wikitext2", "wikitext2"]
    assert set(loaded.respelled) == {("method", "gptq", "GPTQ"), ("eval_set", "WikiText-2", "wikitext2")}
    assert loaded.predict(rows)["new_method"].to_list() == [False, False]
