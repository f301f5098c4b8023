"""Constants and helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qbayes.model.fit import FitOptions
from qbayes.model.samplers import SampleConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DB = ROOT / "data"


def tree_digest(path: Path) -> str:
    """Hash of every file under ``path`` (names and bytes), to prove nothing changed."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_spec_refused(tmp_path: Path, text: str, message: str) -> None:
    """Write ``text`` as a model spec file; loading it must raise a QBayesError matching ``message``."""
    import pytest

    from qbayes.errors import QBayesError
    from qbayes.model.spec import load_spec

    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(QBayesError, match=message):
        load_spec(str(f))


# the sampler settings of the small shared fits (conftest.py) and of tests that refit their rows
# small fits are not gated on R-hat, so no extra chains (samplers.sample)
SMALL = FitOptions(sample=SampleConfig(draws=150, tune=150, chains=2, seed=7, progress=False, extensions=0))
