"""The package's import graph: no cycles, and no import pointing up the layer order of
ARCHITECTURE.md (errors/device/registry → nn → models → formats → loading → engine, train →
posttrain, serve, data, quant, rag, agents, web, exp → commands, cli).

    pytest tests/test_import_graph.py -q

Imports are read with `ast` from every file of src/llmlab, including those inside functions: a
lazy import is still a dependency, and hiding a cycle in a function body does not remove it.
`from pkg import sub` counts as an import of the submodule `sub` only (not of pkg/__init__.py).
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Top-level names of llmlab by layer, low to high. The ARCHITECTURE.md list, plus where its small
# helper modules sit: leaf helpers that import nothing of ours beside `errors` go with `errors`;
# `generation` (reference decoding over a model) with `models`; `tokenize` with `formats`;
# `adapters` and the package root (`llmlab.load`) with `loading`; `__main__` entry points with `cli`.
LAYERS = [
    {"errors", "device", "registry", "bundled", "progress", "sampling"},
    {"nn"},
    {"models", "generation"},
    {"formats", "tokenize"},
    {"loading", "adapters", "llmlab"},
    {"engine", "train"},
    {"posttrain", "serve", "data", "quant", "rag", "agents", "web", "exp"},
    {"commands", "cli", "__main__"},
]


def module_files() -> dict[str, Path]:
    modules = {}
    for path in (SRC / "llmlab").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: climb from this file's package
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [s for s in subs if s in modules]
                if len(targets) < len(subs):  # some names are attributes of `base` itself
                    targets.append(base)
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = "__main__" if parts[-1] == "__main__" else (parts[1] if len(parts) > 1 else "llmlab")
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: top-level name {top!r} has no layer; add it to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root), on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child), on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # a function-level import (commands import their heavy parts lazily) is still an edge
    assert any(target.startswith("llmlab.") for target in graph["llmlab.cli"])
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_upward_imports():
    graph = import_graph()
    upward = sorted(
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )
    assert upward == []


def test_posttrain_depends_on_train_one_way():
    graph = import_graph()
    back = [
        (s, t)
        for s, targets in graph.items()
        if s.startswith("llmlab.train")
        for t in targets
        if t.startswith("llmlab.posttrain")
    ]
    assert back == []
