"""The sampler loop: fresh rounds of chains while the caller's check asks for more draws,
pooled into one tree, and when the diagnostics ask for them."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from qbayes.model.diagnostics import Convergence
from qbayes.model.samplers import SAMPLERS, Prepared, SampleConfig, pool_chains, sample

IID = "iid-normal"  # a sampler of independent standard normal draws, registered for these tests


def _iid_tree(seed: int, chains: int, draws: int) -> xr.DataTree:
    rng = np.random.default_rng(seed)
    dims = ("chain", "draw")
    coords = {"chain": range(chains), "draw": range(draws)}
    post = xr.Dataset({"x": (dims, rng.standard_normal((chains, draws)))}, coords=coords)
    stats = xr.Dataset({"diverging": (dims, np.zeros((chains, draws), bool))}, coords=coords)
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": stats})


@pytest.fixture
def iid_sampler():
    seeds = []

    def prepare(model, cfg: SampleConfig, keep=None) -> Prepared:
        def draw(seed: int) -> xr.DataTree:
            seeds.append(seed)
            return _iid_tree(seed, cfg.chains, cfg.draws)

        return Prepared(0.0, draw)

    SAMPLERS.register(IID, prepare)
    yield seeds
    SAMPLERS.unregister(IID)


def test_pooled_chains_are_renumbered_and_keep_their_draws():
    a, b = _iid_tree(1, 2, 30), _iid_tree(2, 3, 30)
    pooled = pool_chains([a, b])
    post = pooled["posterior"].to_dataset()
    assert list(post["chain"].values) == [0, 1, 2, 3, 4]
    assert np.array_equal(post["x"].values[:2], a["posterior"]["x"].values)
    assert np.array_equal(post["x"].values[2:], b["posterior"]["x"].values)
    assert pooled["sample_stats"]["diverging"].shape == (5, 30)


def test_sampler_adds_rounds_of_fresh_chains_until_the_check_passes(iid_sampler):
    cfg = SampleConfig(draws=40, chains=2, seed=11, extensions=5)
    result = sample(None, sampler=IID, config=cfg, more=lambda t: t["posterior"].sizes["chain"] < 6)
    assert result.rounds == 3 and iid_sampler == [11, 12, 13]  # a new seed per round
    post = result.tree["posterior"].to_dataset()
    assert post.sizes["chain"] == 6
    assert np.array_equal(post["x"].values[:2], _iid_tree(11, 2, 40)["posterior"]["x"].values)


def test_sampler_stops_after_its_extensions(iid_sampler):
    cfg = SampleConfig(draws=40, chains=2, seed=11, extensions=2)
    result = sample(None, sampler=IID, config=cfg, more=lambda t: True)
    assert result.rounds == 3 and result.tree["posterior"].sizes["chain"] == 6
    cfg = SampleConfig(draws=40, chains=2, seed=11, extensions=0)
    assert sample(None, sampler=IID, config=cfg, more=lambda t: True).rounds == 1
    assert sample(None, sampler=IID, config=SampleConfig(draws=40, chains=2)).rounds == 1  # no check, no rounds


def _conv(rhat=1.002, bulk=900.0, tail=800.0, divergences=0) -> Convergence:
    return Convergence(rhat, bulk, tail, divergences, min_bfmi=0.9, worst_rhat_var="x")


@pytest.mark.parametrize(
    ("conv", "more"),
    [
        (_conv(), False),  # converged
        (_conv(rhat=1.013), True),
        (_conv(bulk=350.0), True),
        (_conv(tail=390.0), True),
        (_conv(rhat=1.013, divergences=3), False),  # more draws do not remove divergences
        (_conv(divergences=1), False),
        (_conv(rhat=float("nan"), bulk=40.0), False),  # one chain: no R-hat, and one chain asked for
    ],
)
def test_more_draws_are_asked_for_rhat_and_ess_only(conv, more):
    assert conv.more_draws_help is more
    if more:
        assert not conv.ok
