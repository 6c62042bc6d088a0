"""The import graph of src/llmlab, read with `ast` (nothing is imported), for layering tests.

    from import_graph import module_graph, package_graph, find_cycle
    graph = module_graph()                     # "llmlab.nn.lora" -> {"llmlab.errors", ...}
    layers = package_graph(graph)              # "nn" -> {"errors", ...} (top-level parts of llmlab)
    assert find_cycle(layers, among={"nn", "formats", "models"}) is None

Every import counts, also those inside functions: a lazy import is still a dependency (it only
hides the cycle until that function runs). `from llmlab.x import y` points at module llmlab.x.y
when that is a file or package, else at llmlab.x.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(module: str) -> bool:
    base = SRC.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _targets(node: ast.AST, current: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against the current package
        package = current.split(".") if is_package else current.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.append(candidate if _exists(candidate) else base)
    return found


def module_graph(package: str = "llmlab") -> dict[str, set[str]]:
    """module → the llmlab modules it imports (anywhere in the file). A fresh copy of a graph
    parsed once per test session."""
    return {module: set(targets) for module, targets in _parsed_graph(package).items()}


@functools.cache
def _parsed_graph(package: str) -> dict[str, frozenset[str]]:
    graph: dict[str, frozenset[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        name = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py"):
                if target == package or target.startswith(package + "."):
                    while not _exists(target) and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name:
                        edges.add(target)
        graph[name] = frozenset(edges)
    return graph


def part_of(module: str) -> str:
    """The top-level part of llmlab a module belongs to: "llmlab.nn.lora" → "nn", "llmlab" → ""."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to llmlab's top-level parts (nn, formats, models, loading, ...)."""
    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = collapsed.setdefault(part_of(module), set())
        edges.update(part_of(t) for t in targets if part_of(t) != part_of(module))
    return collapsed


def find_cycle(graph: dict[str, set[str]], among: set[str] | None = None) -> list[str] | None:
    """One cycle as a list of nodes [a, b, ..., a], or None; `among` restricts the graph first."""
    nodes = set(graph) if among is None else set(among) & set(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in nodes:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
