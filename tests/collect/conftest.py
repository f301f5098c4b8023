"""Fixtures for the collection tests: small trained models and collection runs.

Nothing here imports torch at module level, so the fitting-only suite (no torch) still
collects; every test module starts with ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TOY_STEPS = 150  # AdamW steps: enough that int2 visibly hurts, a few seconds each

# collection never reaches a hub; make sure tests cannot either
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")


class ToyModels:
    """Llama-, GPT-2- and OPT-shaped models (~170-190k parameters), each trained for
    TOY_STEPS steps on Shakespeare and saved with save_pretrained the first time a test
    asks for it (so a single test module builds only what it uses)."""

    def __init__(self, root: Path):
        self.root = root
        self._paths: dict[str, Path] = {}

    def __getitem__(self, arch: str) -> Path:
        if arch not in self._paths:
            from qbayes.collect.toymodels import ToySpec, make_toy

            path = self.root / f"toy-{arch}"
            make_toy(path, ToySpec(arch), steps=TOY_STEPS)
            self._paths[arch] = path
        return self._paths[arch]


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory) -> ToyModels:
    pytest.importorskip("torch")
    return ToyModels(tmp_path_factory.mktemp("toys"))
