"""The driver's progress display: tasks done, running, failed and waiting, and time left.

A rich progress bar over the submitted tasks (done and failed both advance it; the time
left is rich's estimate from the rate so far), and one line per finished task, with or
without the bar.
"""

from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TaskProgress:
    def __init__(self, console: Console, total: int, *, enabled: bool):
        self.console = console
        self.total = total
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.bar.add_task("ray", total=total)
        self.update(done=0, running=0, failed=0, retried=0)

    def __enter__(self) -> Self:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def update(self, *, done: int, running: int, failed: int, retried: int) -> None:
        waiting = max(self.total - done - failed - running, 0)
        text = f"ray tasks: {done} done, {running} running, {failed} failed, {waiting} waiting"
        if retried:
            text += f", {retried} retried"
        self.bar.update(self.task, completed=done + failed, description=text)

    def finished(self, task_id: str, what: str) -> None:
        """One task ended (``what``: a short summary or the failure)."""
        self.console.print(f"  {task_id}: {what}", highlight=False)
