"""The quickstart notebook (docs/examples/quickstart.ipynb) runs top to bottom from the
shipped posterior in a fresh kernel, and matches the script it is built from."""

from __future__ import annotations

import importlib.util
import os

import nbformat

from helpers import ROOT

EXAMPLES = ROOT / "docs" / "examples"
_spec = importlib.util.spec_from_file_location("build_quickstart", EXAMPLES / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_the_notebook_is_built_from_the_script():
    committed = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    fresh = build.notebook(EXAMPLES / "quickstart.py")
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], (
        "quickstart.ipynb is out of date: run python docs/examples/build.py"
    )


def test_the_quickstart_notebook_runs(monkeypatch):
    # the kernel imports this checkout's qbayes, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = build.execute(build.notebook(EXAMPLES / "quickstart.py"), EXAMPLES, timeout=120)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # two figures (intervals against memory, the trace plot), the conditioning report and a comparison
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    assert any("conditioned on 1 observed rows" in o.get("text", "") for o in outputs)
    assert any("Qwen2.5-7B Q4_K_M minus Qwen2.5-7B Q5_K_M: median" in o.get("text", "") for o in outputs)
