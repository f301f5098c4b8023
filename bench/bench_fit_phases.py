"""Where the time of one `qbayes fit` goes, step by step, in wall and CPU seconds.

Runs the steps of `qbayes fit` (default model, shipped data, the command's sampling defaults)
in this process and prints each one: the imports, reading the data, the fit (its compile with
the whitening, its sampling, and the rest: building the graph, naming the draws, the
convergence checks), saving the file, and the in-sample check. CPU seconds beside wall
seconds show what ran on both cores (sampling) and what a busy machine slowed. For the
figures a user's first fit meets, point the caches at empty folders:

    PYTENSOR_FLAGS=base_compiledir=$(mktemp -d) NUMBA_CACHE_DIR=$(mktemp -d) \\
        python bench/bench_fit_phases.py

Run it twice with the same folders for the warm figures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

STEPS: list[tuple[str, float, float | None]] = []  # (step, wall s, CPU s or None)


def step(name: str, wall0: float, cpu0: float) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    STEPS.append((name, wall - wall0, cpu - cpu0))
    return wall, cpu


def main() -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    # the imports are a step of their own: `qbayes fit` pays them too
    from qbayes.api.fit import model_spec
    from qbayes.db import store
    from qbayes.model import fitfile
    from qbayes.model.fit import FitOptions, fit_table
    from qbayes.model.ppc_cells import check_cells
    from qbayes.model.samplers import SampleConfig
    from qbayes.model.table import training_table

    wall, cpu = step("imports (qbayes, PyMC, nutpie)", wall, cpu)
    spec = model_spec()
    table = training_table(store.load_paths(), rows=spec.rows)
    wall, cpu = step("reading the data", wall, cpu)
    fit = fit_table(table, spec, FitOptions(sample=SampleConfig(progress=False)))
    info = fit.info
    STEPS.append(("  fit: compile and whitening", info.compile_s, None))  # the fit's own wall clocks
    STEPS.append(("  fit: sampling", info.sample_s, None))
    wall, cpu = step("fit (all of it)", wall, cpu)
    with tempfile.TemporaryDirectory() as tmp:
        fitfile.save(fit, Path(tmp) / "fit.nc")
        wall, cpu = step("saving the fit", wall, cpu)
    cells = check_cells(fit)
    step("in-sample check", wall, cpu)

    print(f"model {spec.name}: {info.n_rows} rows, {info.convergence.line()}")
    print(cells.summary())
    print(f"{'step':36s} {'wall s':>8s} {'CPU s':>8s}")
    for name, w, c in STEPS:
        print(f"{name:36s} {w:8.2f} " + ("" if c is None else f"{c:8.2f}"))
    total = sum(w for name, w, _ in STEPS if not name.startswith("  "))
    print(f"{'total':36s} {total:8.2f}")


if __name__ == "__main__":
    main()
