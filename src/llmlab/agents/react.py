"""The ReAct loop: thought → action (a tool call) → observation, until a final answer or max steps.

    agent = ReActAgent(EngineChat(llm), default_registry(["calculator"]), trace="out.jsonl")
    result = agent.run("What is 17 * 23?")
    result.answer, result.stopped, result.steps       # "391", "answer", [...]

Two action formats. Text (any model): the model writes

    Thought: ...
    Action: calculator
    Action Input: {"expression": "17 * 23"}      (or a bare string for a one-string tool)

or `Final Answer: ...`; generation stops at "Observation:", the tool's result is sent back as the
next user turn. Parsing is forgiving (case, `Action: tool[input]`, `tool(input)`, code fences)
because a 135M model's format drifts. `scaffold=True` (for such models) starts each reply with
"Action:" until a tool has answered and then with "Final Answer:"; with one tool, an action that
names no tool is taken as that tool's input. `constrain=True` instead constrains each reply with
the engine's constrained decoding (a regex over the format and the registered tool names; with
`OpenAIChat(guided=True)` sent as `guided_regex`). Native (`chat.native_tools`): the registry's schemas go out
as OpenAI `tools` and `tool_calls` come back. Tool errors, unknown tools and unparseable replies
become observations, never exceptions. Observations are cut to `max_observation_chars`.

The JSONL trace (one event per line: model / action / observation / final) is written to
`trace + ".partial"` as it goes and renamed to `trace` when the run ends, so a crash never
replaces the last complete trace.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.agents.prompts import load_prompt
from llmlab.agents.tools import ToolRegistry

FINAL = re.compile(r"final\s*answer\s*[:：]\s*(.*)", re.IGNORECASE | re.DOTALL)
ACTION = re.compile(
    r"action\s*[:：]\s*`*([A-Za-z_][\w-]*)`*\s*(?:\[(.*?)\]|\((.*)\))?", re.IGNORECASE
)
ACTION_INPUT = re.compile(r"action\s*input\s*[:：]\s*(.*)", re.IGNORECASE | re.DOTALL)
FENCE = re.compile(r"^```[\w]*\n?|\n?```$")
STOP = ["Observation:", "\nObservation"]


@dataclass
class Step:
    thought: str = ""
    tool: str | None = None
    tool_input: str | dict | None = None
    final: str | None = None
    call_id: str | None = None


def parse_reply(text: str) -> Step:
    """The model's text → a final answer, an action, or neither (both None)."""
    action, final = ACTION.search(text), FINAL.search(text)
    thought = text[: min(m.start() for m in (action, final) if m)] if (action or final) else text
    thought = re.sub(r"^\s*thought\s*[:：]\s*", "", thought.strip(), flags=re.IGNORECASE)
    if final and (not action or final.start() < action.start()):
        return Step(thought, final=final.group(1).strip())
    if action:
        inline = action.group(2) if action.group(2) is not None else action.group(3)
        given = ACTION_INPUT.search(text, action.end())
        raw = given.group(1) if given else (inline or "")
        raw = FENCE.sub("", raw.strip()).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1]
        return Step(thought, tool=action.group(1), tool_input=raw)
    return Step(thought)


def action_regex(registry: ToolRegistry) -> str:
    """Thought line, then `Action: <tool>` + `Action Input: <input>` or `Final Answer: ...`; a
    tool with an `input_pattern` (the calculator: arithmetic characters only) gets its own."""
    actions = []
    for name, tool in registry.tools.items():
        given = tool.input_pattern or r"[^\n]{1,300}"
        actions.append(rf"Action: {re.escape(name)}\nAction Input: {given}")
    return rf"Thought: [^\n]{{1,200}}\n({'|'.join(actions)}|Final Answer: [^\n]{{1,200}})"


@dataclass
class AgentResult:
    question: str
    answer: str | None
    stopped: str  # "answer" | "max_steps"
    steps: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class ReActAgent:
    def __init__(
        self,
        chat,
        registry: ToolRegistry,
        max_steps: int = 6,
        max_observation_chars: int = 1000,
        prompt: str = "react",
        trace: str | None = None,
        scaffold: bool = False,
        constrain: bool = False,
    ):
        self.chat, self.registry = chat, registry
        self.max_steps, self.max_observation_chars = max_steps, max_observation_chars
        self.prompt = load_prompt("agent", prompt)
        self.trace_path = trace
        self.scaffold = scaffold
        self.constrain = constrain and getattr(chat, "constrainable", False)

    def system_message(self) -> str:
        template = self.prompt["system_native" if self.chat.native_tools else "system"]
        return template.format(
            tools=self.registry.describe(), names=", ".join(self.registry.names())
        )

    def run(self, question: str) -> AgentResult:
        messages = [
            {"role": "system", "content": self.system_message()},
            {"role": "user", "content": self.prompt["user"].format(question=question)},
        ]
        result = AgentResult(question, None, "max_steps")
        start = time.monotonic()
        with _Trace(self.trace_path) as trace:
            trace.write({"type": "question", "text": question, "tools": self.registry.names()})
            for number in range(1, self.max_steps + 1):
                reply = self.chat.complete(
                    messages,
                    stop=STOP,
                    tools=self.registry.schemas(),
                    prefill=self._prefill(result),
                    regex=self._regex(),
                )
                result.prompt_tokens += reply.prompt_tokens
                result.completion_tokens += reply.completion_tokens
                trace.write(
                    {
                        "type": "model",
                        "step": number,
                        "text": reply.text,
                        "tool_calls": reply.tool_calls,
                        "tokens": [reply.prompt_tokens, reply.completion_tokens],
                    }
                )
                steps = self._steps(reply)
                if len(steps) == 1 and steps[0].final is not None:
                    result.answer, result.stopped = steps[0].final, "answer"
                    trace.write({"type": "final", "step": number, "answer": result.answer})
                    break
                self._record_assistant(messages, reply)
                for step in steps:
                    observation = self._observe(step)
                    result.steps.append(
                        {
                            "step": number,
                            "thought": step.thought,
                            "tool": step.tool,
                            "input": step.tool_input,
                            "observation": observation,
                        }
                    )
                    trace.write(
                        {
                            "type": "action",
                            "step": number,
                            "tool": step.tool,
                            "input": step.tool_input,
                        }
                    )
                    trace.write({"type": "observation", "step": number, "text": observation})
                    if step.call_id:
                        messages.append(
                            {"role": "tool", "tool_call_id": step.call_id, "content": observation}
                        )
                    else:
                        messages.append({"role": "user", "content": f"Observation: {observation}"})
            result.seconds = time.monotonic() - start
            trace.write(
                {
                    "type": "end",
                    "stopped": result.stopped,
                    "answer": result.answer,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "seconds": round(result.seconds, 3),
                }
            )
        return result

    def _regex(self) -> str | None:
        """With constrain=True (text format): every reply is a Thought, then an Action on a
        registered tool with an input, or a Final Answer — constrained decoding keeps a small
        model's replies parseable."""
        if not self.constrain or self.chat.native_tools:
            return None
        return action_regex(self.registry)

    def _prefill(self, result: AgentResult) -> str:
        """Scaffold for small models: the reply starts with "Action:" until a tool has answered,
        then with "Final Answer:" (the model still writes the tool input and the answer)."""
        if not self.scaffold or self.chat.native_tools:
            return ""
        useful = [s for s in result.steps if not s["observation"].startswith("error:")]
        return "Final Answer:" if useful else "Action:"

    def _steps(self, reply) -> list[Step]:
        if reply.tool_calls:
            return [
                Step(reply.text, c["name"], c["arguments"], call_id=c["id"])
                for c in reply.tool_calls
            ]
        if self.chat.native_tools:  # a native reply without tool calls is the answer
            return [Step(final=reply.text.strip())]
        step = parse_reply(reply.text)
        only = self.registry.names()
        if self.scaffold and len(only) == 1 and step.final is None and step.tool not in only:
            # "Action: 37 * 41": a small model writes the input where the tool name goes.
            match = re.search(r"action\s*[:：]\s*(.+)", reply.text, re.IGNORECASE)
            if match:
                step = Step(step.thought, only[0], match.group(1).strip())
        return [step]

    def _record_assistant(self, messages: list, reply) -> None:
        message = {"role": "assistant", "content": reply.text.strip()}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in reply.tool_calls
            ]
        messages.append(message)

    def _observe(self, step: Step) -> str:
        if step.tool is None:
            return (
                "error: no action found. Reply with 'Action: <tool>' and 'Action Input: "
                "<input>', or with 'Final Answer: <answer>'."
            )
        text = self.registry.call(step.tool, step.tool_input or {})
        limit = self.max_observation_chars
        if len(text) > limit:
            text = text[:limit] + f" ... [truncated {len(text) - limit} characters]"
        return text


class _Trace:
    """JSONL events to PATH.partial, renamed to PATH on exit (nothing written without a path)."""

    def __init__(self, path: str | None):
        self.path, self.handle = path, None

    def __enter__(self):
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path + ".partial", "w", encoding="utf-8")
        return self

    def write(self, event: dict) -> None:
        if self.handle:
            self.handle.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
            self.handle.flush()

    def __exit__(self, exc_type, *rest):
        if self.handle:
            self.handle.close()
            if exc_type is None:
                os.replace(self.path + ".partial", self.path)
        return False
