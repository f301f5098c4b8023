"""MkDocs hooks (mkdocs.yml): the figures in reports/ that pages show as ``../reports/NAME``
(right on GitHub, where docs/ sits beside reports/) are copied into the site as
``reports/NAME`` and the links rewritten to match, so a missing figure still fails
``mkdocs build --strict``."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

REPORTS = Path(__file__).resolve().parents[1] / "reports"
LINK = re.compile(r"\]\(\.\./reports/([^)\s]+\.svg)\)")


def on_files(files, config):
    for svg in sorted(REPORTS.glob("*.svg")):
        files.append(File.generated(config, f"reports/{svg.name}", abs_src_path=str(svg)))
    return files


def on_page_markdown(markdown, page, config, files):
    # pages at the top of docs/ only: their ../reports/ is the site's reports/
    if "/" in page.file.src_uri:
        return markdown
    return LINK.sub(r"](reports/\1)", markdown)
