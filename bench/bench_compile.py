"""What `qbayes fit`'s compile is made of: nutpie's compile of a model, part by part, in CPU-seconds.

Prints the PyTensor part (logp, gradient, rewrites: nutpie's ``_make_functions``), the numba
compile of each function nutpie builds (logp + gradient, then the per-draw deterministics), the
number of graph nodes by kind, the numba functions compiled (exclusive CPU time, grouped by
name; from numba's compile events) and the CPU cost of one logp + gradient evaluation. CPU
time rather than wall time, since the shared machine's load moves wall times. For a cold
compile, point the caches at empty folders:

    PYTENSOR_FLAGS=base_compiledir=$(mktemp -d) NUMBA_CACHE_DIR=$(mktemp -d) \\
        python bench/bench_compile.py [--model hierarchical]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="hierarchical")
    args = ap.parse_args()
    import numba
    import nutpie
    import nutpie.compile_pymc as ncp
    from numba.core import event

    from qbayes.db import store
    from qbayes.model.covariates import covariates
    from qbayes.model.fit import prepare
    from qbayes.model.graph import build_model
    from qbayes.model.spec import load_spec
    from qbayes.model.table import training_table

    spec = load_spec(args.model)
    df, enc = prepare(training_table(store.load("data"), rows=spec.rows), spec)
    model = build_model(spec, covariates(enc.read(df)), enc, df.get_column("delta").to_numpy())

    parts: list[tuple[str, float]] = []
    make_functions, cfunc = ncp._make_functions, numba.cfunc

    def timed_make_functions(*a, **k):
        c0 = time.process_time()
        out = make_functions(*a, **k)
        parts.append(("PyTensor: logp, gradient, rewrites (_make_functions)", time.process_time() - c0))
        return out

    def timed_cfunc(sig, **kw):
        def compile_one(f):
            c0 = time.process_time()
            out = cfunc(sig, **kw)(f)
            name = "logp + gradient" if len(parts) == 1 else "per-draw deterministics"
            parts.append((f"numba: {name}", time.process_time() - c0))
            return out

        return compile_one

    exclusive, count, stack = collections.Counter(), collections.Counter(), []

    class CompileTimes(event.Listener):
        def on_start(self, ev):
            stack.append([time.process_time(), 0.0])

        def on_end(self, ev):
            c0, children = stack.pop()
            spent = time.process_time() - c0
            if stack:
                stack[-1][1] += spent
            name = getattr(getattr(ev.data.get("dispatcher"), "py_func", None), "__name__", "?")
            exclusive[name] += spent - children
            count[name] += 1

    ncp._make_functions, numba.cfunc = timed_make_functions, timed_cfunc
    event.register("numba:compile", CompileTimes())
    c0 = time.process_time()
    compiled = nutpie.compile_pymc_model(model, var_names=[v.name for v in model.free_RVs])
    total = time.process_time() - c0
    ncp._make_functions, numba.cfunc = make_functions, cfunc

    print(f"model {spec.name}: {compiled.n_dim} free parameters, {df.height} rows; compile {total:.1f} CPU-s")
    for name, secs in parts:
        print(f"  {secs:6.1f} s  {name}")
    nodes = compiled.logp_func.maker.fgraph.toposort()
    kinds = collections.Counter(
        type(n.op.scalar_op if type(n.op).__name__ == "Elemwise" else n.op).__name__ for n in nodes
    )
    print(f"logp + gradient graph: {len(nodes)} nodes: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(8)))
    print(f"numba functions compiled: {sum(count.values())}, {sum(exclusive.values()):.1f} CPU-s; the largest:")
    for name, secs in exclusive.most_common(8):
        print(f"  {secs:6.2f} s  {count[name]:4d}  {name}")
    x, reps = np.zeros(compiled.n_dim), 2000
    compiled.logp_func(x)
    c0 = time.process_time()
    for _ in range(reps):
        compiled.logp_func(x)
    print(f"one logp + gradient: {(time.process_time() - c0) / reps * 1e6:.0f} CPU-us (called from Python)")


if __name__ == "__main__":
    main()
