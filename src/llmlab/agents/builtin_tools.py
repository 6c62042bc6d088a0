"""The built-in tools: `calculator`, `python` (the sandbox) and `notes_search` (RAG over the notes).

    registry = default_registry(["calculator", "python"])

`notes_search` searches `llmlab.rag`'s index: the folder in $LLMLAB_RAG_INDEX, else the bundled
notes' default index (built and cached on first use); an installation without `llmlab.rag` or a
broken index answers with an error observation that says so.
"""

from __future__ import annotations

import os

from llmlab.agents.calculator import evaluate, format_number
from llmlab.agents.tools import Tool, ToolRegistry, tool_from_function
from llmlab.errors import LlmlabError

PYTHON_TIMEOUT_S = 10.0
PYTHON_MEMORY_MB = 256


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. "12 * (3 + 4)"; supports + - * / // % ** and sqrt, log, exp, sin, cos, min, max, round, pi, e."""
    # "37 * 41 = 1447." — small models append a claimed result; evaluate the left side only.
    expression = expression.split("=")[0].strip().rstrip(".")
    try:
        return format_number(evaluate(expression))
    except (ValueError, TypeError, OverflowError) as exc:
        return f"error: {exc}"


def python(code: str) -> str:
    """Run a Python program in a sandbox (no network, no files outside its own directory) and return what it prints."""
    from llmlab.agents.sandbox import run_python

    result = run_python(code, timeout_s=PYTHON_TIMEOUT_S, memory_mb=PYTHON_MEMORY_MB)
    text = result.stdout
    if result.reason != "ok":
        tail = "\n".join(result.stderr.strip().splitlines()[-3:])
        text += f"\n[exit: {result.reason}] {tail}".rstrip()
    return text.strip() or "(no output; use print() to show a value)"


def notes_search(query: str, k: int = 3) -> str:
    """Search the course notes and return the best passages with their headings."""
    try:
        from llmlab.rag import Index  # the knowledge base, a sibling layer, loaded only when used
    except ImportError:
        return "error: notes_search is unavailable: llmlab.rag is not part of this installation yet"
    path = os.environ.get("LLMLAB_RAG_INDEX", "")  # else the bundled notes' cached index
    try:
        if path:
            index = Index.load(path)
        else:
            from llmlab.rag import default_index

            index = default_index()
        hits = index.search(query, k=k)
    except Exception as exc:  # noqa: BLE001 - a missing/broken index is an observation
        where = path or "the default notes index"
        return (
            f"error: notes_search could not use {where} ({type(exc).__name__}: {exc}); "
            "build one with `llmlab rag index`"
        )
    lines = []
    for i, hit in enumerate(hits, 1):
        get = hit.get if isinstance(hit, dict) else lambda key, h=hit: getattr(h, key, "")
        heading = get("heading")
        heading = " > ".join(heading) if isinstance(heading, list | tuple) else heading
        lines.append(f"[{i}] {heading}: {str(get('text'))[:400]}")
    return "\n".join(lines) or "no passages found"


BUILTIN = {"calculator": calculator, "python": python, "notes_search": notes_search}
INPUT_PATTERNS = {  # what a text-format Action Input may look like under constrained decoding
    # numbers joined by operators, then optionally the model's own "= claim" (ignored when run)
    "calculator": r"\(?-?[0-9]+(\.[0-9]+)?\)?( ?[-+*/%^] ?\(?-?[0-9]+(\.[0-9]+)?\)?){0,8}( = -?[0-9.]{1,12})?",
    "python": r"[\s\S]{1,800}",  # code spans lines
}


def builtin_tool(name: str) -> Tool:
    if name not in BUILTIN:
        raise LlmlabError(f"unknown tool '{name}' (choose from {', '.join(BUILTIN)})")
    tool = tool_from_function(BUILTIN[name])
    tool.input_pattern = INPUT_PATTERNS.get(name)
    return tool


def default_registry(names: list[str] | None = None) -> ToolRegistry:
    return ToolRegistry([builtin_tool(n) for n in (names or ["calculator", "python"])])
