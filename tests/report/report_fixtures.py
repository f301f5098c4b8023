"""Names shared by the report tests' fixtures and tests (a uniquely named module, so
test files can import it; ``conftest`` is ambiguous across test folders)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
VALIDATION_JSON = FIXTURES / "validation.json"
EVIL_FAMILY = "<script>alert(1)</script>"
EVIL_METHOD = "Odd $x$ & <b>bold</b>"
FAMILIES = ("Llama-2", "BLOOM", "Falcon")
