"""Function calling for the chat endpoint: tools in the prompt, a grammar that makes the model's
calls well-formed, and a parser that turns its output into OpenAI `tool_calls` (whole or streamed).

The format (Hermes/Qwen style, used when the model's chat template has no tool support of its own
— SmolLM2's and Gemma 3's have none): the tools are listed in the system message, and each call is

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

with several calls one per line when `parallel_tool_calls` is on. Tool results go back as a user
turn `<tool_response>…</tool_response>` (consecutive results merged into one turn, so templates that
insist on alternating roles accept them). Where a template does take `tools` (it mentions them),
the tools and messages are handed to it as they are.

The grammar (llguidance Lark) pins the wrapper and each function's name and checks its arguments
against the function's JSON Schema; with `tool_choice: "auto"` the output is either calls or a
text answer that does not start with "<" (so the first character decides which).

    prompt_messages = template_messages(messages, tools, tokenizer)
    grammar = tool_grammar(tools, tool_choice, parallel=True, text_schema=None)
    parser = ToolCallParser(tool_mode=choice != "auto"); events = parser.feed(delta)
"""

from __future__ import annotations

import json
import re
import uuid

from llmlab.engine.guided import JSON_OPTIONS, check_grammar, json_schema_grammar, lark_string
from llmlab.errors import LlmlabError

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
NAME_PREFIX, ARGS_PREFIX = '{"name": "', '", "arguments": '
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

SYSTEM_TOOLS = (
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def check_tools(tools: list[dict], tool_choice) -> None:
    """Raise LlmlabError naming the problem: a bad function name, an unknown named choice, a
    parameters schema the grammar compiler rejects."""
    names = set()
    for index, tool in enumerate(tools):
        name = tool["function"]["name"]
        if not _NAME.fullmatch(name):
            raise LlmlabError(
                f"tools[{index}].function.name '{name}' must be 1-64 letters, digits, _ or -"
            )
        if name in names:
            raise LlmlabError(f"tools[{index}].function.name '{name}' is used twice")
        names.add(name)
        check_grammar(
            json_schema_grammar(parameters(tool)), f"tools[{index}].function.parameters ({name})"
        )
    if isinstance(tool_choice, dict):
        wanted = tool_choice["function"]["name"]
        if wanted not in names:
            raise LlmlabError(f"tool_choice names the function '{wanted}', which is not in tools")
    elif tool_choice == "required" and not tools:
        raise LlmlabError('tool_choice "required" needs at least one tool')


def parameters(tool: dict) -> dict:
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def _template_has_tools(tokenizer) -> bool:
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def template_messages(messages: list[dict], tools: list[dict], tokenizer) -> tuple[list, dict]:
    """(messages, extra template kwargs) for the chat template, tools and tool turns included."""
    if _template_has_tools(tokenizer):
        return messages, ({"tools": tools} if tools else {})
    out: list[dict] = []
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        prompt = SYSTEM_TOOLS.format(tools=listing)
        if messages and messages[0]["role"] in ("system", "developer"):
            first = messages[0]
            out.append({"role": "system", "content": f"{_text(first)}\n\n{prompt}".lstrip()})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": prompt})
    for message in messages:
        role = message["role"]
        if role == "tool":
            response = f"<tool_response>\n{_text(message)}\n</tool_response>"
            if out and out[-1].get("_tool_turn"):
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response, "_tool_turn": True})
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = [_call_text(c) for c in message["tool_calls"]]
            content = "\n".join(([_text(message)] if _text(message) else []) + calls)
            out.append({"role": "assistant", "content": content})
            continue
        out.append({"role": "system" if role == "developer" else role, "content": _text(message)})
    return [{k: v for k, v in m.items() if k != "_tool_turn"} for m in out], {}


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _call_text(call: dict) -> str:
    function = call["function"]
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except json.JSONDecodeError as error:
        raise LlmlabError(
            f"assistant tool call '{function.get('name')}' has arguments that are not JSON: {error}"
        ) from error
    body = {"name": function["name"], "arguments": arguments}
    return f"{OPEN}{json.dumps(body, ensure_ascii=False)}{CLOSE}"


def tool_grammar(tools: list[dict], tool_choice, parallel: bool, text_schema=None) -> str:
    """Lark grammar (llguidance dialect) for the output under this tool_choice: calls only
    ("required" / a named function) or a text answer or calls ("auto")."""
    if isinstance(tool_choice, dict):
        tools = [t for t in tools if t["function"]["name"] == tool_choice["function"]["name"]]
    rules = []
    for i, tool in enumerate(tools):
        schema = dict(parameters(tool))
        schema.setdefault("x-guidance", JSON_OPTIONS)
        head = lark_string(f"{NAME_PREFIX}{tool['function']['name']}{ARGS_PREFIX}")
        rules.append(f'fn{i}: {head} args{i} "}}"')
        rules.append(f"args{i}: %json {json.dumps(schema, ensure_ascii=False)}")
    call = f"call: {lark_string(OPEN)} ({' | '.join(f'fn{i}' for i in range(len(tools)))}) " + (
        lark_string(CLOSE)
    )
    calls = 'calls: call ("\\n" call)*' if parallel else "calls: call"
    if tool_choice == "auto":
        if text_schema is not None:
            text_schema = dict(text_schema)
            text_schema.setdefault("x-guidance", JSON_OPTIONS)
            start = f"start: calls | answer\nanswer: %json {json.dumps(text_schema)}"
        else:
            start = "start: calls | TEXT\nTEXT: /[^<](.|\\n)*/"
    else:
        start = "start: calls"
    return "\n".join([start, calls, call, *rules])


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallParser:
    """Incremental: feed text deltas, get events — ("content", text), ("call", index, id, name),
    ("arguments", index, fragment). With tool_mode False (tool_choice "auto") the first
    character decides: "<" starts calls, anything else is a plain answer."""

    def __init__(self, tool_mode: bool):
        self.mode = "calls" if tool_mode else "undecided"
        self.buffer = ""
        self.state = "open"  # open → name → args → close → open …
        self.index = -1
        self.depth, self.in_string, self.escaped = 0, False, False
        self.calls: list[dict] = []  # {"id", "name", "arguments"} assembled so far
        self.content = ""

    def feed(self, text: str) -> list[tuple]:
        events: list[tuple] = []
        self.buffer += text
        if self.mode == "undecided" and self.buffer:
            self.mode = "calls" if self.buffer[0] == "<" else "content"
        if self.mode == "content":
            if self.buffer:
                events.append(("content", self.buffer))
                self.content += self.buffer
            self.buffer = ""
            return events
        while self.mode == "calls" and self.buffer and self._step(events):
            pass
        return events

    def _expect(self, literal: str) -> bool | None:
        """True once `literal` was consumed; None while it may still come; False on mismatch."""
        if len(self.buffer) < len(literal):
            return None if literal.startswith(self.buffer) else False
        if not self.buffer.startswith(literal):
            return False
        self.buffer = self.buffer[len(literal) :]
        return True

    def _step(self, events) -> bool:
        """Consume what the buffer allows in the current state; False to wait for more text."""
        if self.state == "open":
            if self.index >= 0:  # a newline separates parallel calls
                if self.buffer == "\n":
                    return False
                if self.buffer.startswith("\n"):
                    self.buffer = self.buffer[1:]
            result = self._expect(OPEN + NAME_PREFIX)
            if result is False:
                return self._give_up(events)
            if result:
                self.state = "name"
            return bool(result)
        if self.state == "name":
            end = self.buffer.find('"')
            if end < 0:
                return False
            rest = self.buffer[end:]
            if not rest.startswith(ARGS_PREFIX):
                if len(rest) < len(ARGS_PREFIX) and ARGS_PREFIX.startswith(rest):
                    return False
                return self._give_up(events)
            name, self.buffer = self.buffer[:end], rest[len(ARGS_PREFIX) :]
            self.index += 1
            call = {"id": new_call_id(), "name": name, "arguments": ""}
            self.calls.append(call)
            events.append(("call", self.index, call["id"], name))
            self.state, self.depth = "args", 0
            return True
        if self.state == "args":
            taken = self._scan_arguments()
            fragment, self.buffer = self.buffer[:taken], self.buffer[taken:]
            if fragment:
                self.calls[-1]["arguments"] += fragment
                events.append(("arguments", self.index, fragment))
            if self.depth == 0 and fragment:
                self.state = "close"
            return bool(fragment) and bool(self.buffer)
        result = self._expect("}" + CLOSE)  # state "close"
        if result is False:
            return self._give_up(events)
        if result:
            self.state = "open"
        return bool(result)

    def _scan_arguments(self) -> int:
        """How many buffered characters belong to the arguments object (stops after it closes)."""
        for i, ch in enumerate(self.buffer):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return len(self.buffer)

    def _give_up(self, events) -> bool:
        """Output that is not a call (no grammar held it): the rest is plain content."""
        self.mode = "content"
        if self.buffer:
            events.append(("content", self.buffer))
            self.content += self.buffer
        self.buffer = ""
        return False


def openai_tool_calls(calls: list[dict]) -> list[dict]:
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]},
        }
        for c in calls
    ]


def render_prompt(tokenizer, messages: list[dict], tools: list[dict]) -> list[int]:
    """Prompt token ids: the chat template over the messages, with tools and tool turns."""
    from llmlab.tokenize.tokenizer import apply_chat, normalize_messages

    converted, extra = template_messages(messages, tools, tokenizer)
    if not extra:
        return apply_chat(tokenizer, converted)
    try:  # the template's own tool format
        text = tokenizer.apply_chat_template(
            normalize_messages(converted), tokenize=False, add_generation_prompt=True, **extra
        )
    except Exception as error:  # jinja2 raises its own types
        raise LlmlabError(f"chat template failed: {error}") from error
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]


def request_constraint(tools: list[dict], tool_mode, parallel: bool, schema, guided: dict) -> dict:
    """The SamplingParams constraint for a chat request: tool calls (tool_mode "auto",
    "required" or a named function), else response_format's schema, else the guided_* extras."""
    if tool_mode is not None and tools:
        if guided:
            raise LlmlabError("guided_* fields cannot be combined with tools")
        text_schema = {"type": "object"} if schema is True else schema
        return {"grammar": tool_grammar(tools, tool_mode, parallel, text_schema)}
    if schema is not None:
        if guided:
            raise LlmlabError("response_format cannot be combined with guided_* fields")
        return {"json_schema": schema}
    return dict(guided)
