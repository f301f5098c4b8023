"""The generic registry (qbayes.registry), and that every real registry refuses an unknown
name with a suggestion. Real registries whose refusal is tested elsewhere: executors
(tests/collect/test_executors.py, 'rey'), methods (tests/collect/test_collect_failures.py,
'gtpq'; tests/collect/test_grid_and_texts.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qbayes.errors import QBayesError
from qbayes.registry import Registry


def test_register_get_and_listing():
    reg: Registry[int] = Registry("thing")
    assert reg.register("b", 2) == 2

    @reg.register("a")
    def one():
        return 1

    assert reg.get("a") is one and reg["b"] == 2
    assert "a" in reg and "c" not in reg and len(reg) == 2
    assert reg.names() == ["a", "b"]  # sorted
    assert list(reg) == ["b", "a"] and [k for k, _ in reg.items()] == ["b", "a"]  # registration order
    assert list(reg.values()) == [2, one]


def test_unknown_name_suggests_the_closest():
    reg = Registry("sampler")
    for name in ("nutpie", "pymc"):
        reg.register(name, object())
    with pytest.raises(
        QBayesError, match=r"^unknown sampler 'nutpei' \(did you mean 'nutpie'\?\); known: nutpie, pymc$"
    ):
        reg.get("nutpei")
    with pytest.raises(QBayesError, match=r"^unknown sampler 'zzz'; known: nutpie, pymc$"):
        reg["zzz"]
    assert str(reg.unknown("pymx", kind="sampler in fit.toml")).startswith(
        "unknown sampler in fit.toml 'pymx' (did you mean 'pymc'?)"
    )


def test_duplicate_refused_unless_replaced_and_unregister():
    reg = Registry("method")
    reg.register("rtn", 1)
    with pytest.raises(QBayesError, match="method 'rtn' is already registered"):
        reg.register("rtn", 2)
    with pytest.raises(QBayesError, match="already registered"):
        reg.register_lazy("rtn", "json:dumps")
    reg.register("rtn", 3, replace=True)
    assert reg.get("rtn") == 3
    reg.unregister("rtn")
    reg.unregister("rtn")  # absent: nothing happens
    assert "rtn" not in reg
    with pytest.raises(ValueError, match="a method needs a name"):
        reg.register("", 1)


def test_lazy_entry_is_imported_only_on_get(tmp_path, monkeypatch):
    (tmp_path / "qbayes_registry_probe.py").write_text("LOADED = True\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(tmp_path)
    reg = Registry("executor")
    reg.register_lazy("probe", "qbayes_registry_probe:Thing")
    reg.register_lazy("broken", "qbayes_no_such_module_anywhere:X")  # would fail if imported early
    assert "probe" in reg and reg.names() == ["broken", "probe"]
    assert "qbayes_registry_probe" not in sys.modules
    assert reg.available("probe") and not reg.available("broken") and not reg.available("nope")
    assert "qbayes_registry_probe" not in sys.modules  # find_spec imports nothing
    thing = reg.get("probe")
    assert thing.__name__ == "Thing" and sys.modules["qbayes_registry_probe"].LOADED
    assert reg.get("probe") is thing
    monkeypatch.delitem(sys.modules, "qbayes_registry_probe")
    with pytest.raises(ModuleNotFoundError):
        reg.get("broken")
    with pytest.raises(ValueError, match="'module:attribute'"):
        reg.register_lazy("bad", "no_colon")


def test_lazy_registries_import_nothing_heavy():
    """The CLI's commands and the executors are lazy: ``qbayes --help``, ``import
    qbayes.model`` and listing the executors import none of torch, ray, jax or pymc."""
    code = (
        "import sys\n"
        "from qbayes.cli import main\n"
        "import qbayes.model, qbayes.model.samplers, qbayes.model.features\n"
        "from qbayes.collect.executors import EXECUTORS\n"
        "assert EXECUTORS.names() == ['local', 'ray']\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'jax', 'pymc') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines()[-1] == "[]"
    for command in ("collect", "db", "fit", "validate", "zoo"):
        assert command in r.stdout


# -- every real registry refuses an unknown name with a suggestion ------------------------


def test_unknown_sampler_suggested():
    from qbayes.model.samplers import SAMPLERS, sample

    assert SAMPLERS.names() == ["blackjax", "numpyro", "nutpie", "pymc"]
    with pytest.raises(QBayesError, match=r"unknown sampler 'nutpei' \(did you mean 'nutpie'\?\)"):
        sample(None, sampler="nutpei")


def test_unknown_baseline_suggested(cli, tmp_path):
    from qbayes.evaluation.baselines import BASELINES

    assert BASELINES.names() == ["cell_median", "random_forest", "scaling_law_ls"]
    r = cli("validate", "--baseline", "cell_medain")
    assert r.code == 2 and "unknown baseline 'cell_medain' (did you mean 'cell_median'?)" in r.err


def test_unknown_covariate_suggested():
    from qbayes.model.features import COVARIATES, check_names

    assert next(iter(COVARIATES)) == "log_nsr"  # registration order: the design's column order
    with pytest.raises(QBayesError, match=r"unknown feature in spec x 'log_nrs' \(did you mean 'log_nsr'\?\)"):
        check_names(["log_nsr", "log_nrs"], "spec x")


def test_unknown_command_suggested(cli):
    r = cli("vaildate")
    assert r.code == 2 and "no such command 'vaildate' (did you mean 'validate'?)" in r.err
