"""The package's import graph: no cycles, and no import pointing up the layer order of
ARCHITECTURE.md (errors/device/registry → nn → models → formats → loading → engine, train →
posttrain, serve, data, quant, rag, agents, web, exp → commands, cli).

    pytest tests/test_import_graph.py -q

Imports are read with `ast` (tests/import_graph.py) from every file of src/llmlab, including those
inside functions: a lazy import is still a dependency, and hiding a cycle in a function body does
not remove it.
"""

from import_graph import find_cycle, module_graph

# Top-level names of llmlab by layer, low to high. The ARCHITECTURE.md list, plus where its small
# helper modules sit: leaf helpers that import nothing of ours beside `errors` go with `errors`;
# `generation` (reference decoding over a model) with `models`; `tokenize` with `formats`;
# `adapters` and the package root (`llmlab.load`) with `loading`; `__main__` entry points with `cli`.
LAYERS = [
    {"errors", "device", "registry", "bundled", "progress", "sampling", "markdown"},
    {"nn"},
    {"models", "generation"},
    {"formats", "tokenize"},
    {"loading", "adapters", "llmlab"},
    {"engine", "train"},
    {"posttrain", "serve", "data", "quant", "rag", "agents", "web", "exp"},
    {"commands", "cli", "__main__"},
]


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = "__main__" if parts[-1] == "__main__" else (parts[1] if len(parts) > 1 else "llmlab")
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module}: top-level name {top!r} has no layer; add it to LAYERS")


def test_graph_sees_lazy_imports_and_the_cycle_finder_finds_a_planted_cycle():
    graph = module_graph()
    # commands import their heavy parts inside functions: still edges
    assert "llmlab.train.pretrain" in graph["llmlab.commands.train"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    assert find_cycle(module_graph()) is None


def test_no_upward_imports():
    graph = module_graph()
    upward = sorted(
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )
    assert upward == []


def test_posttrain_depends_on_train_one_way():
    graph = module_graph()
    back = [
        (s, t)
        for s, targets in graph.items()
        if s.startswith("llmlab.train")
        for t in targets
        if t.startswith("llmlab.posttrain")
    ]
    assert back == []
