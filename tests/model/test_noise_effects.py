"""Grouping effects of the noise scale (spec effect part ``noise_scale``, kind "s"): a shift of
the log of the likelihood's scale per level, fitted, predicted and conditioned on like the
law's effects (qbayes/model/mean.py ``noise_shift``), on conftest's small model with one per
method (noise_fit)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from qbayes.errors import QBayesError
from qbayes.model import conditioning
from qbayes.model.mean import design_matrix, layout, noise_shift, relative_noise
from qbayes.model.predict import Predictor, noise_shift_draws
from qbayes.model.spec import load_spec


def _spec(tmp_path, method_effect: str):
    path = tmp_path / "t.toml"
    path.write_text(f'name = "t"\n[effects]\nmethod = {{ {method_effect} }}\n')
    return load_spec(str(path))


def _rows(fit, method: str, n: int = 4) -> pl.DataFrame:
    return fit.data.filter(pl.col("method") == method).head(n).drop("delta", "doubt", strict=False)


def test_noise_scale_is_a_spec_part_with_its_own_design(tmp_path):
    """``noise_scale`` parses as an effect part; a spec without it keeps its canonical JSON
    (and so its hash); a fixed sd for a part the effect lacks is refused."""
    spec = _spec(tmp_path, "intercept = true, noise_scale = true, fixed_sd = { noise_scale = 0.4 }")
    assert spec.effects["method"].kinds == ("a", "s")
    assert "noise_scale" in spec.to_json()
    plain = _spec(tmp_path, "intercept = true")
    assert "noise_scale" not in plain.to_json()  # hashes of specs without it are unchanged
    with pytest.raises(QBayesError, match="noise_scale"):
        _spec(tmp_path, "intercept = true, fixed_sd = { noise_scale = 0.4 }")


def test_noise_design_carries_only_the_noise_effects(noise_fit):
    """The noise effects' columns sit in theta like every effect; the law's design has zeros
    there, and the noise design has a one per row there and zeros everywhere else."""
    fit = noise_fit
    d = Predictor(fit, n_draws=50).prepare(_rows(fit, "GPTQ")).covariates
    effects, levels = fit.spec.effects, fit.encoding.levels
    law = design_matrix(d, effects, levels, fit.spec.curvature)
    noise = design_matrix(d, effects, levels, fit.spec.curvature, "noise")
    k = len(levels["method"]) + 1
    entries = layout(fit.spec.effects, fit.encoding.levels, fit.encoding.feature_names)
    cols = [name for name, width in entries for _ in range(width)]
    s_cols = [i for i, c in enumerate(cols) if c == "s_method"]
    assert len(s_cols) == k
    assert not law[:, s_cols].any()
    assert np.array_equal(noise[:, s_cols].sum(axis=1), np.ones(d.n))
    assert not np.delete(noise, s_cols, axis=1).any()


def test_a_seen_methods_noise_scale_is_its_own(noise_fit):
    """The scale of a row's predictive noise is noise_rel * exp(noise terms + s_method of
    its method): two methods' rows at the same covariates differ by exactly their shifts."""
    fit = noise_fit
    assert "s_method" in fit.posterior
    q = _rows(fit, "GPTQ", 1)
    q = pl.concat([q, q.with_columns(pl.lit("RTN").alias("method"))])
    pr = Predictor(fit, n_draws=200)
    d = pr.prepare(q).covariates
    shift = noise_shift_draws(fit, d, pr.draws)
    levels = list(fit.encoding.levels["method"])
    s = pr.draws.p["s_method"]
    np.testing.assert_allclose(shift[0], s[levels.index("GPTQ")], rtol=1e-5)
    np.testing.assert_allclose(shift[1], s[levels.index("RTN")], rtol=1e-5)
    scale = relative_noise(pr.draws.p, d, fit.spec.noise, np, shift)
    base = relative_noise(pr.draws.p, d, fit.spec.noise, np)
    np.testing.assert_allclose(np.log(scale / base), shift, rtol=1e-4, atol=1e-5)
    assert noise_shift(pr.draws.p, d, fit.spec.effects, fit.encoding.levels, np) is not None


def test_a_new_methods_rows_draw_their_noise_scale_from_the_population(noise_fit):
    """A method the fit has not seen takes the population's new-level draw of s (sd times a
    standard normal, so it varies across draws around 0), and a second new method in the
    same table an independent one."""
    fit = noise_fit
    q = _rows(fit, "GPTQ", 1)
    q = pl.concat([q.with_columns(pl.lit(m).alias("method")) for m in ("NewQuant", "OtherQuant")])
    pr = Predictor(fit, n_draws=400)
    shift = noise_shift_draws(fit, pr.prepare(q).covariates, pr.draws).astype(np.float64)
    sd = float(np.median(pr.draws.p["sd_s_method"]))
    assert 0.5 * sd < np.std(shift[0]) < 2.0 * sd
    assert 0.5 * sd < np.std(shift[1]) < 2.0 * sd
    assert abs(np.corrcoef(shift[0], shift[1])[0, 1]) < 0.2


def test_observed_scatter_of_a_new_method_widens_its_noise(noise_fit):
    """Rows of a method the fit has not seen that scatter far around any one level teach its
    noise shift (an effect of the noise scale, not of the law's mean): conditioning on them
    raises it, and the method's other predictions get wider intervals."""
    fit = noise_fit
    base = fit.data.filter((pl.col("method") == "GPTQ") & (pl.col("w_bits") == 4)).head(8)
    assert base.height == 8
    new = base.with_columns(pl.lit("NewQuant").alias("method"))
    shown, hidden = new.head(6), new.slice(6, 2).drop("delta", "doubt", strict=False)
    # each pair of measured rows a factor of 30 apart: far more than any seen method scatters
    measured = shown.with_columns(pl.Series("delta", [0.01, 0.3, 0.012, 0.36, 0.008, 0.25]))
    pr = Predictor(fit, n_draws=400, seed=3)
    together = pr.prepare(pl.concat([measured.drop("delta", "doubt", strict=False), hidden]))
    d = together.covariates.rows(slice(0, 6))
    units = conditioning._units(pr, d)
    k = units.names.index(("s_method", 0))
    assert not units.loading[:, k].any() and not units.act_loading[:, k].any()
    assert units.noise_loading[:, k].all()
    update = conditioning.update(pr, d, measured["delta"].to_numpy())
    assert ("s_method", 0) in update.units
    after = pr.with_draws(update.draws)
    h = together.covariates.rows(slice(6, 8))
    before_shift = noise_shift_draws(fit, h, pr.draws).mean()
    after_shift = noise_shift_draws(fit, h, after.draws).mean()
    assert after_shift > before_shift + 0.2
