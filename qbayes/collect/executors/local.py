"""The local executor: each model in turn, in this process, writing straight into ``--out``.

This is collection as it has always run: one :class:`~qbayes.collect.runner.Collector`
per model on the same shard, resuming what the shard already holds. A model that cannot
be loaded (out of memory included) is recorded in the failures table and counted as
lost, and the run goes on with the next model; the command then exits 1.
"""

from __future__ import annotations

from rich.console import Console

from qbayes.collect.executors.base import CollectRequest, Outcome
from qbayes.collect.plan import CollectOptions
from qbayes.collect.runner import Collector, ModelNotLoaded


class LocalExecutor:
    def run(self, request: CollectRequest, console: Console) -> Outcome:
        outcome = Outcome()
        for model in request.models:
            opts = CollectOptions(
                model_path=model.path,
                family=model.family,
                grid=request.grid,
                out=request.out,
                name=model.name,
                device=request.device,
                seed=request.seed,
                force=request.force,
                progress=request.progress,
            )
            try:
                summary = Collector(opts, console).run()
            except ModelNotLoaded as exc:
                outcome.failures.append(f"{model.name}: not loaded: {str(exc).splitlines()[0]}")
                outcome.lost += 1
                continue
            outcome.lines.append(
                f"run {summary.run_id}: {len(summary.ran)} step(s) ran, {len(summary.skipped)} already in the "
                f"shard, {len(summary.failed)} failed; shard: {summary.shard}"
            )
            outcome.failures += [line.splitlines()[0] for line in summary.failed]
        return outcome
