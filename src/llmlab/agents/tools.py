"""A tool registry: typed Python functions become tools with JSON schemas, called with validated args.

    registry = ToolRegistry()

    @registry.tool
    def add(a: int, b: int = 1) -> int:
        \"\"\"Add two integers.\"\"\"
        return a + b

    registry.schemas()                       # OpenAI `tools` entries (JSON Schema from pydantic)
    registry.call("add", {"a": 2})           # "3"
    registry.call("add", '{"a": "x"}')       # "error: add: a: Input should be a valid integer ..."

A call never raises: an unknown tool, arguments that fail validation or a tool that raises all
come back as an "error: ..." observation, which is what the model sees next.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


@dataclass
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[BaseModel]  # pydantic model built from the signature
    input_pattern: str | None = None  # regex for a text-format input (constrained decoding)

    def schema(self) -> dict:
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }

    def single_string_parameter(self) -> str | None:
        """The parameter a bare string input maps to, when the tool takes exactly one str."""
        fields = self.arguments.model_fields
        required = [k for k, f in fields.items() if f.is_required()]
        if len(required) == 1 and fields[required[0]].annotation is str:
            return required[0]
        return None


def tool_from_function(
    function: Callable, name: str | None = None, description: str | None = None
) -> Tool:
    """Build a Tool from a function's signature and docstring; every parameter needs a type hint."""
    name = name or function.__name__
    hints = inspect.get_annotations(function, eval_str=True)
    fields = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described by a schema")
        if param.name not in hints:
            raise TypeError(f"tool {name}: parameter '{param.name}' needs a type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )
    doc = inspect.getdoc(function) or ""
    return Tool(name, description or doc.split("\n\n")[0].strip() or name, function, model)


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None):
        self.tools: dict[str, Tool] = {}
        for t in tools or []:
            self.add(t)

    def add(self, tool: Tool) -> Tool:
        self.tools[tool.name] = tool
        return tool

    def tool(self, function: Callable | None = None, *, name: str | None = None, description=None):
        """Decorator: `@registry.tool` or `@registry.tool(name="x")`; returns the function."""

        def wrap(fn):
            self.add(tool_from_function(fn, name, description))
            return fn

        return wrap(function) if function is not None else wrap

    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self) -> list[dict]:
        return [t.schema() for t in self.tools.values()]

    def describe(self) -> str:
        """One line per tool for a text prompt: name(params): description."""
        lines = []
        for t in self.tools.values():
            props = t.schema()["function"]["parameters"].get("properties", {})
            params = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
            lines.append(f"- {t.name}({params}): {t.description}")
        return "\n".join(lines)

    def parse_arguments(self, name: str, arguments: Any) -> dict:
        """Raw arguments (a dict, a JSON object string, or a bare string for a one-str tool)."""
        t = self.tools[name]
        if isinstance(arguments, str):
            text = arguments.strip()
            try:
                arguments = json.loads(text) if text.startswith("{") else None
            except json.JSONDecodeError:
                arguments = None
            if arguments is None:
                key = t.single_string_parameter()
                if key is None:
                    raise ValueError(f"{name} expects a JSON object of arguments, got {text!r}")
                arguments = {key: text}
        if not isinstance(arguments, dict):
            raise ValueError(f"{name} expects a JSON object of arguments")
        return arguments

    def call(self, name: str, arguments: Any) -> str:
        """The tool's result as text, or 'error: ...'; never raises."""
        if name not in self.tools:
            return f"error: unknown tool '{name}' (available: {', '.join(self.tools) or 'none'})"
        try:
            raw = self.parse_arguments(name, arguments)
            values = self.tools[name].arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return f"error: {name}: {problems}"
        except ValueError as exc:
            return f"error: {exc}"
        try:
            result = self.tools[name].function(**dict(values))
        except Exception as exc:  # noqa: BLE001 - any tool failure becomes an observation
            return f"error: {name} failed: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else json.dumps(result, default=str)
