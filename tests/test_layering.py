"""Layering of the model core, read from the source with `ast`: nn imports nothing above it,
formats reads and writes tensors and configs only (no models, no loading), and nn, formats and
models have no import cycle, neither between the three nor between their files. The helper
itself is checked on a graph with a known cycle, so a broken helper cannot pass silently."""

from import_graph import find_cycle, module_graph, package_graph, part_of

CORE = {"nn", "formats", "models"}
BELOW_NN = {"errors", "device", "registry"}


def test_helper_finds_a_known_cycle_and_reads_real_edges():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = module_graph()
    # Real edges it must see: a top-level import and one inside a function.
    assert "llmlab.nn.rotary" in graph["llmlab.models.llama"]
    assert "llmlab.formats.gguf" in graph["llmlab.loading"]


def test_nn_imports_nothing_above_it():
    graph = module_graph()
    upward = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if part_of(module) == "nn"
        for target in targets
        if part_of(target) not in BELOW_NN | {"nn"}
    }
    assert not upward, f"nn/ imports upwards: {sorted(upward)}"


def test_formats_reads_tensors_and_configs_only():
    graph = module_graph()
    allowed = BELOW_NN | {"nn", "formats"}
    bad = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if part_of(module) == "formats"
        for target in targets
        if part_of(target) not in allowed
    }
    assert not bad, f"formats/ builds or loads models: {sorted(bad)}"


def test_no_cycle_between_nn_formats_and_models():
    graph = module_graph()
    assert find_cycle(package_graph(graph), among=CORE) is None
    core_modules = {m for m in graph if part_of(m) in CORE}
    assert find_cycle(graph, among=core_modules) is None
