"""Build quickstart.ipynb from quickstart.py (percent cells) and execute it in place, so
the notebook on the site shows its output: run after editing the script,
``python docs/examples/build.py``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
CELL = re.compile(r"^# %%( \[markdown\])?\n", re.M)


def notebook(script: Path) -> nbformat.NotebookNode:
    """The cells of a percent-format script as a notebook."""
    text = script.read_text()
    marks = list(CELL.finditer(text))
    cells = []
    for m, nxt in zip(marks, marks[1:] + [None]):
        body = text[m.end() : nxt.start() if nxt else len(text)].strip("\n")
        if m.group(1):
            cells.append(nbformat.v4.new_markdown_cell(re.sub(r"^# ?", "", body, flags=re.M)))
        else:
            cells.append(nbformat.v4.new_code_cell(body))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """``nb`` run top to bottom in a fresh kernel; a failing cell raises."""
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


if __name__ == "__main__":
    nb = execute(notebook(HERE / "quickstart.py"), HERE)
    nbformat.write(nb, HERE / "quickstart.ipynb")
    print(f"wrote {HERE / 'quickstart.ipynb'}", file=sys.stderr)
