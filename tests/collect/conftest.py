"""Fixtures for the collection tests: small trained models and collection runs.

Nothing here imports torch at module level, so the fitting-only suite (no torch) still
collects; every test module starts with ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "collectors" / "tiny.toml"
TOY_STEPS = 150  # AdamW steps: enough that int2 visibly hurts, a few seconds each

# collection never reaches a hub; make sure tests cannot either
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory) -> dict[str, Path]:
    """Llama-, GPT-2- and OPT-shaped models (~170-190k parameters), trained for
    TOY_STEPS steps on Shakespeare and saved with save_pretrained."""
    pytest.importorskip("torch")
    from qbayes.collect.toymodels import ToySpec, make_toy

    root = tmp_path_factory.mktemp("toys")
    out = {}
    for arch in ("llama", "gpt2", "opt"):
        make_toy(root / f"toy-{arch}", ToySpec(arch), steps=TOY_STEPS)
        out[arch] = root / f"toy-{arch}"
    return out


def write_grid(path: Path, *, methods: str, eval_sets=("shakespeare",), calib=("shakespeare",),
               features: bool = False, extra: str = "") -> Path:
    """A small grid file for a focused test (the tiny grid's budgets)."""
    evals = ", ".join(f'"{e}"' for e in eval_sets)
    cals = ", ".join(f'"{c}"' for c in calib)
    path.write_text(f"""
[eval]
sets = [{evals}]
tokens = 1024
seq_len = 128

[calibration]
sets = [{cals}]
samples = 4
seq_len = 128

[self_check]
tokens = 512

[efficiency]
decode_tokens = 8
prompt_tokens = 8

[features]
landscape = {str(features).lower()}
outliers = {str(features).lower()}
landscape_eval = ["shakespeare"]
outlier_calib = ["shakespeare"]
tokens = 256
seq_len = 128
hutchinson_samples = 4
power_iters = 4
radii = [0.1]
radial_directions = 1
outlier_tokens = 256
{extra}
{methods}
""")
    return path
