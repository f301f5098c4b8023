"""The tasks accuracy is predicted for: each one's chance level and number of questions
(``data/tasks.csv``, with the lm-evaluation-harness task definition and paper it comes from).

The chance level is the accuracy of guessing (0 for tasks without options, such as
LAMBADA's exact next word or IFEval's rule checks); the accuracy model predicts the share of
the accuracy above it that survives quantization. The number of questions sets a score's
binomial standard error. A task name the table lacks is refused with close matches: the
sources' own averages (``avg11``, ``avg3``) are not tasks and are not predicted.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from qbayes import resources
from qbayes.errors import QBayesError, unknown

COLUMNS = ("task", "chance_pct", "n_items", "split", "scoring", "source")


@dataclass(frozen=True)
class Task:
    name: str
    chance: float  # percent
    n_items: int
    source: str

    def binomial_se(self, acc_pct: float) -> float:
        """Standard error of a score of ``acc_pct`` percent on this task, in points."""
        p = min(max(acc_pct / 100.0, 0.0), 1.0)
        return 100.0 * math.sqrt(p * (1.0 - p) / self.n_items)


@dataclass(frozen=True)
class Tasks:
    by_name: dict[str, Task]

    @property
    def names(self) -> list[str]:
        return sorted(self.by_name)

    def get(self, name: str, where: str = "query") -> Task:
        """The task called ``name``; a name the table lacks is refused with close matches."""
        t = self.by_name.get(name)
        if t is None:
            raise QBayesError(f"{where}: {unknown('task', name, self.names)} (the tasks of data/tasks.csv)")
        return t


def read(path: Path) -> Tasks:
    df = resources.read_table(path, COLUMNS, what="the table of tasks")
    out = {}
    for i, r in enumerate(df.iter_rows(named=True)):
        try:
            chance, n = float(r["chance_pct"]), int(r["n_items"])
        except (TypeError, ValueError):
            raise QBayesError(f"{path}, line {i + 2}: chance_pct and n_items must be numbers") from None
        if not (0 <= chance < 100 and n > 0):
            raise QBayesError(f"{path}, line {i + 2}: chance_pct must be in [0, 100) and n_items > 0")
        out[r["task"]] = Task(r["task"], chance, n, r["source"])
    return Tasks(out)


@functools.cache
def load() -> Tasks:
    """The shipped table of tasks."""
    return read(resources.tasks_csv())
