"""The public Python API's documentation: every public function and class has a docstring
with an example and is on docs/api.md (the check the site build runs, docs/site_hooks.py),
and the examples run and print what they say, as does the Python on docs/api.md and in the
README."""

from __future__ import annotations

import doctest
import functools
import importlib.util
import inspect
import re

import polars as pl
import pytest
from mkdocs.exceptions import PluginError

import qbayes
from qbayes.model import fitfile

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("site_hooks", ROOT / "docs" / "site_hooks.py")
site_hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site_hooks)


def test_every_public_name_has_a_docstring_with_an_example_on_the_api_page():
    api = site_hooks.public_api()
    # the check covers the package face, the result classes and their methods
    assert {"qbayes.api.model.load", "qbayes.api.model.Model.predict", "qbayes.api.validate.Validation"} <= set(api)
    assert site_hooks.undocumented() == []


def test_the_check_reports_what_is_missing(monkeypatch):
    def bare(x):
        return x

    monkeypatch.setattr(qbayes, "__all__", [*qbayes.__all__, "bare"])
    monkeypatch.setattr(qbayes, "bare", bare, raising=False)
    assert site_hooks.undocumented() == [
        f"{__name__}.test_the_check_reports_what_is_missing.<locals>.bare: no docstring",
        f"{__name__}.test_the_check_reports_what_is_missing.<locals>.bare: not in docs/api.md "
        f"(add '::: {__name__}.test_the_check_reports_what_is_missing.<locals>.bare')",
    ]
    # and the site build stops on it
    with pytest.raises(PluginError, match="bare: no docstring"):
        site_hooks.on_pre_build(config=None)


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    tests = []
    for name, (obj, _) in site_hooks.public_api().items():
        target = obj.fget if isinstance(obj, property) else obj
        for t in finder.find(target, name, module=inspect.getmodule(target), globs={"qbayes": qbayes, "pl": pl}):
            if t.examples:
                tests.append(t)
    return tests


EXAMPLES = _examples()
# examples that sample (minutes of MCMC) are shown, not run: the CLI-and-Python tests in
# tests/test_api.py run each of these functions on a small input
SAMPLING = {
    "qbayes.api.fit.fit",
    "qbayes.api.fit.fit_accuracy",
    "qbayes.api.validate.validate",
    "qbayes.api.validate.Validation",
    "qbayes.api.validate.validate_accuracy",
    "qbayes.api.validate.AccuracyValidation",
    "qbayes.api.report.write_report",
}


def test_only_examples_that_sample_are_skipped():
    skipped = {t.name for t in EXAMPLES for e in t.examples if e.options.get(doctest.SKIP)}
    assert skipped <= SAMPLING
    assert len(EXAMPLES) - len(SAMPLING) >= 10  # the rest run


@pytest.fixture(scope="module")
def one_load():
    """The shipped posterior read once for all examples (each calls qbayes.load)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fitfile, "load", functools.cache(fitfile.load))
        yield


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example_runs(test, one_load):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = []
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


@pytest.mark.parametrize("page", ["docs/api.md", "README.md"])
def test_the_python_on_the_api_page_and_in_the_readme_runs(page, one_load, monkeypatch):
    blocks = _python_blocks((ROOT / page).read_text())
    assert blocks, f"{page} shows no Python"
    monkeypatch.chdir(ROOT)  # the README reads docs/examples/queries.csv
    for code in blocks:
        exec(compile(code, page, "exec"), {})
