"""What every executor is given and gives back, and the process settings collection needs.

An executor runs a :class:`CollectRequest` (models x grid into one database directory)
and returns an :class:`Outcome`: the lines to show, the failures with their reasons,
and whether any unit of work was lost (a non-zero exit for the command line).
Nothing here imports torch or ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from qbayes.collect.grid import Grid
from qbayes.collect.manifest import ModelEntry

# collection never reaches a hub, and its libraries stay quiet
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
}


@dataclass(frozen=True)
class CollectRequest:
    """Collect every model under every configuration of ``grid`` into ``out``."""

    models: tuple[ModelEntry, ...]
    grid: Grid
    out: Path
    device: str = "cpu"
    seed: int = 0
    force: bool = False
    progress: bool = True


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)  # what was done
    failures: list[str] = field(default_factory=list)  # "what: reason", one per failure
    lost: int = 0  # units of work that did not complete (their rows are missing)


class Executor(Protocol):
    def run(self, request: CollectRequest, console: Console) -> Outcome: ...


def offline_environment() -> None:
    """Set the environment collection runs in (before transformers is imported)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
