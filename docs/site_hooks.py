"""MkDocs hooks (mkdocs.yml).

The figures in reports/ that pages show as ``../reports/NAME`` (right on GitHub, where docs/
sits beside reports/) are copied into the site as ``reports/NAME`` and the links rewritten
to match, so a missing figure still fails ``mkdocs build --strict``.

The public Python API is checked before the build (`undocumented`): every name in
``qbayes.__all__``, the public methods of its classes and the result classes it returns
need a docstring with an ``Examples:`` section (the section mkdocstrings renders
``>>>`` lines of as code), and docs/api.md must show each of them
(``::: qbayes.api....``); a miss fails the build. tests/test_api_docs.py runs the same
check and executes the examples."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPORTS = Path(__file__).resolve().parents[1] / "reports"
LINK = re.compile(r"\]\(\.\./reports/([^)\s]+\.svg)\)")
API_PAGE = Path(__file__).resolve().parent / "api.md"
# what the public functions return, documented beside them
RESULT_CLASSES = (
    "qbayes.api.validate.Validation",
    "qbayes.api.validate.AccuracyValidation",
    "qbayes.api.choose.Comparison",
    "qbayes.api.suggest.Suggestion",
)


def public_api() -> dict[str, tuple[object, str]]:
    """Dotted name (where the object is defined) -> (object, the name docs/api.md shows it
    under), for everything a user of the Python API calls or reads: ``qbayes.__all__``,
    the result classes, and the public methods and properties of those classes (shown
    with their class)."""
    import importlib

    import qbayes

    objects = [getattr(qbayes, n) for n in qbayes.__all__]
    for dotted in RESULT_CLASSES:
        module, name = dotted.rsplit(".", 1)
        objects.append(getattr(importlib.import_module(module), name))
    out = {}
    for obj in objects:
        shown = f"{obj.__module__}.{obj.__qualname__}"
        out[shown] = (obj, shown)
        if inspect.isclass(obj) and not issubclass(obj, Exception):
            for name, member in vars(obj).items():
                if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    out[f"{shown}.{name}"] = (member, shown)
    return out


def undocumented() -> list[str]:
    """What the public API lacks: docstrings, their ``Examples:`` sections (properties
    excepted), and the entries of docs/api.md that render them."""
    page = API_PAGE.read_text()
    problems = []
    for name, (obj, shown) in public_api().items():
        doc = inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""
        if not doc.strip():
            problems.append(f"{name}: no docstring")
        elif "Examples:" not in doc and not isinstance(obj, property):
            problems.append(f"{name}: its docstring has no 'Examples:' section")
        if not re.search(rf"^::: {re.escape(shown)}$", page, re.MULTILINE):
            problems.append(f"{name}: not in docs/api.md (add '::: {shown}')")
    return problems


def on_pre_build(config):
    problems = undocumented()
    if problems:
        raise PluginError("the public Python API is not fully documented:\n  " + "\n  ".join(problems))


def on_files(files, config):
    for svg in sorted(REPORTS.glob("*.svg")):
        files.append(File.generated(config, f"reports/{svg.name}", abs_src_path=str(svg)))
    return files


def on_page_markdown(markdown, page, config, files):
    # pages at the top of docs/ only: their ../reports/ is the site's reports/
    if "/" in page.file.src_uri:
        return markdown
    return LINK.sub(r"](reports/\1)", markdown)
