"""The built-in tools: `calculator`, `python` (the sandbox) and `notes_search` (RAG over the notes).

    registry = default_registry(["calculator", "python"])

`notes_search` works once `llmlab.rag.Index` exists (the knowledge base); until then, or when no
index has been built, it answers with an error observation that says so.
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
    path = os.environ.get("LLMLAB_RAG_INDEX", "runs/rag/index")
    try:
        index = Index.load(path) if hasattr(Index, "load") else Index(path)
        hits = index.search(query, k=k)
    except Exception as exc:  # noqa: BLE001 - a missing/broken index is an observation
        return f"error: notes_search could not use the index at {path} ({type(exc).__name__}: {exc}); build it with `llmlab rag index`"
    lines = []
    for i, hit in enumerate(hits, 1):
        get = hit.get if isinstance(hit, dict) else lambda key, h=hit: getattr(h, key, "")
        heading = get("heading")
        heading = " > ".join(heading) if isinstance(heading, list | tuple) else heading
        lines.append(f"[{i}] {heading}: {str(get('text'))[:400]}")
    return "\n".join(lines) or "no passages found"


BUILTIN = {"calculator": calculator, "python": python, "notes_search": notes_search}


def builtin_tool(name: str) -> Tool:
    if name not in BUILTIN:
        raise LlmlabError(f"unknown tool '{name}' (choose from {', '.join(BUILTIN)})")
    return tool_from_function(BUILTIN[name])


def default_registry(names: list[str] | None = None) -> ToolRegistry:
    return ToolRegistry([builtin_tool(n) for n in (names or ["calculator", "python"])])
