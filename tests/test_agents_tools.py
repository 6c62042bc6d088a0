"""Tool registry (function → schema, argument validation), the calculator, the ReAct loop on a
scripted model and through the OpenAI-compatible client (a mock HTTP transport).

    PYTHONPATH=src python -m pytest tests/test_agents_tools.py -q
"""

import json

import httpx
import pytest

from llmlab.agents.builtin_tools import default_registry, notes_search
from llmlab.agents.calculator import evaluate
from llmlab.agents.chat_models import OpenAIChat, Reply, ScriptedChat
from llmlab.agents.react import ReActAgent, parse_reply
from llmlab.agents.tools import ToolRegistry, tool_from_function


def scale(values: list[float], factor: float = 2.0, label: str | None = None) -> dict:
    """Multiply every value by a factor.

    More text that is not part of the description."""
    return {"label": label, "values": [v * factor for v in values]}


def test_function_becomes_a_json_schema():
    schema = tool_from_function(scale).schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "scale" and fn["description"] == "Multiply every value by a factor."
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["values"]
    assert params["properties"]["values"] == {"type": "array", "items": {"type": "number"}}
    assert params["properties"]["factor"] == {"type": "number", "default": 2.0}
    assert params["additionalProperties"] is False


def test_functions_without_type_hints_are_refused():
    def bad(x):
        return x

    with pytest.raises(TypeError, match="needs a type hint"):
        tool_from_function(bad)


def test_arguments_are_validated_and_errors_become_observations():
    registry = ToolRegistry()
    registry.tool(scale)

    @registry.tool(name="boom")
    def explode(x: int) -> int:
        """Always fails."""
        raise RuntimeError("kaput")

    assert json.loads(registry.call("scale", {"values": [1, 2], "factor": 3})) == {
        "label": None,
        "values": [3, 6],
    }
    assert json.loads(registry.call("scale", '{"values": ["1.5"]}'))["values"] == [3.0]
    assert registry.call("scale", {"values": "abc"}).startswith("error: scale: values:")
    assert "factor" in registry.call("scale", {"values": [1], "factor": "big"})
    assert "Extra inputs" in registry.call("scale", {"values": [1], "colour": "red"})
    assert "values: Field required" in registry.call("scale", {})
    assert registry.call("scale", "not json").startswith("error: scale expects a JSON object")
    assert registry.call("nope", {}).startswith("error: unknown tool 'nope'")
    assert registry.call("boom", {"x": 1}) == "error: boom failed: RuntimeError: kaput"


def test_calculator_is_exact_and_refuses_code():
    assert evaluate("2 * (3 + 4) ** 2 / sqrt(16)") == 24.5
    assert evaluate("17 * 23") == 391 and evaluate("-2^3") == -8
    registry = default_registry(["calculator"])
    assert registry.call("calculator", "1,000 * 3") == "3000"
    assert registry.call("calculator", {"expression": "10 / 4"}) == "2.5"
    assert registry.call("calculator", "37 * 41 = 1447.") == "1517"  # a claimed result is ignored
    for attack in [
        "__import__('os').system('true')",
        "().__class__.__base__.__subclasses__()",
        "open('/etc/passwd')",
        "[x for x in range(10)]",
        "9 ** 9 ** 9",
        "1 / 0",
    ]:
        assert registry.call("calculator", attack).startswith("error:"), attack


def test_python_tool_runs_in_the_sandbox(monkeypatch):
    import llmlab.agents.builtin_tools as builtin

    monkeypatch.setattr(builtin, "PYTHON_TIMEOUT_S", 1.0)
    registry = default_registry(["python"])
    assert registry.call("python", "print(sum(i * i for i in range(10)))") == "285"
    out = registry.call("python", {"code": "import time\ntime.sleep(30)"})
    assert out.endswith("[exit: timeout]")
    assert "ZeroDivisionError" in registry.call("python", "print(1/0)")


def test_notes_search_uses_the_rag_index(monkeypatch):
    # llmlab.rag's contract (Index.load(folder).search(q, k) → hits with heading and text),
    # stood in for by a fake module: building a real index trains an encoder (20 s here).
    import sys
    import types

    from llmlab.rag.index import Hit  # the real hit type

    class FakeIndex:
        @classmethod
        def load(cls, folder):
            if "missing" in folder:
                raise FileNotFoundError(folder)
            return cls()

        def search(self, query, k=5):
            hits = [
                Hit("c1", "Training > LoRA", 2.0, "LoRA learns a low-rank update.", (2, 3)),
                Hit("c2", "Training > Dropout", 1.0, "Dropout zeroes activations.", (4, 5)),
            ]
            return hits[:k]

    monkeypatch.setitem(sys.modules, "llmlab.rag", types.SimpleNamespace(Index=FakeIndex))
    monkeypatch.setenv("LLMLAB_RAG_INDEX", "runs/index")
    text = notes_search("low-rank update", k=1)
    assert text == "[1] Training > LoRA: LoRA learns a low-rank update."
    monkeypatch.setenv("LLMLAB_RAG_INDEX", "runs/missing")
    assert notes_search("x").startswith("error: notes_search could not use runs/missing")
    monkeypatch.setitem(sys.modules, "llmlab.rag", None)  # an installation without rag
    assert "llmlab.rag is not part of this installation" in notes_search("x")


@pytest.mark.parametrize(
    "text, tool, given",
    [
        ("Thought: use it\nAction: calculator\nAction Input: 2 + 2", "calculator", "2 + 2"),
        (
            'action: calculator\naction input: {"expression": "3*3"}',
            "calculator",
            '{"expression": "3*3"}',
        ),
        ("Action: calculator[5 * 5]", "calculator", "5 * 5"),
        ("Action: `python`\nAction Input:\n```python\nprint(1)\n```", "python", "print(1)"),
        ('Action: calculator\nAction Input: "7-1"', "calculator", "7-1"),
    ],
)
def test_parse_reply_is_forgiving(text, tool, given):
    step = parse_reply(text)
    assert (step.tool, step.tool_input, step.final) == (tool, given, None)


def test_parse_reply_final_and_nothing():
    assert parse_reply("Thought: done\nFinal Answer: 42").final == "42"
    step = parse_reply("I think it is 5.")
    assert step.tool is None and step.final is None


def test_react_loop_on_a_scripted_model(tmp_path):
    chat = ScriptedChat(
        [
            "Thought: multiply\nAction: calculator\nAction Input: 17 * 23\nObservation: 999",
            "Thought: oops\nAction: wikipedia\nAction Input: x",
            "I am not sure",
            "Thought: I know\nFinal Answer: 391",
        ]
    )
    trace = tmp_path / "trace.jsonl"
    agent = ReActAgent(chat, default_registry(["calculator"]), max_steps=5, trace=str(trace))
    result = agent.run("What is 17 * 23?")
    assert result.answer == "391" and result.stopped == "answer"
    assert [s["observation"] for s in result.steps][
        0
    ] == "391"  # the real result, not the model's 999
    assert result.steps[1]["observation"].startswith("error: unknown tool 'wikipedia'")
    assert result.steps[2]["observation"].startswith("error: no action found")
    assert chat.sent[1][-1] == {"role": "user", "content": "Observation: 391"}
    assert "calculator(expression: string)" in chat.sent[0][0]["content"]
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e["type"] for e in events][:4] == ["question", "model", "action", "observation"]
    assert events[-1]["type"] == "end" and events[-1]["answer"] == "391"
    assert not (tmp_path / "trace.jsonl.partial").exists()


def test_max_steps_and_observation_truncation():
    chat = ScriptedChat(["Action: python\nAction Input: print('x' * 5000)"] * 2)
    agent = ReActAgent(chat, default_registry(["python"]), max_steps=2, max_observation_chars=100)
    result = agent.run("loop")
    assert result.stopped == "max_steps" and result.answer is None and len(result.steps) == 2
    assert result.steps[0]["observation"] == "x" * 100 + " ... [truncated 4900 characters]"


def test_a_failed_run_keeps_the_last_good_trace(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("good\n")
    agent = ReActAgent(ScriptedChat([]), default_registry(["calculator"]), trace=str(trace))
    with pytest.raises(Exception, match="ran out of replies"):
        agent.run("q")
    assert trace.read_text() == "good\n"


def _mock_server(replies):
    """An OpenAI-compatible /chat/completions that replays replies and records the requests."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        message = replies.pop(0)
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3},
            },
        )

    return httpx.MockTransport(handle), seen


def test_agent_through_an_openai_server_with_native_tool_calls():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "calculator", "arguments": '{"expression": "6 * 7"}'},
    }
    transport, seen = _mock_server(
        [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "assistant", "content": "42"},
        ]
    )
    chat = OpenAIChat("http://x/v1", "m", native_tools=True, transport=transport)
    result = ReActAgent(chat, default_registry(["calculator"])).run("6 times 7?")
    assert result.answer == "42" and result.steps[0]["observation"] == "42"
    assert seen[0]["tools"][0]["function"]["name"] == "calculator"
    assert seen[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert seen[1]["messages"][-2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert result.prompt_tokens == 20 and result.completion_tokens == 6


def test_agent_through_an_openai_server_in_text_mode():
    transport, seen = _mock_server(
        [
            {"role": "assistant", "content": "Action: calculator\nAction Input: 2**10"},
            {"role": "assistant", "content": "Final Answer: 1024"},
        ]
    )
    chat = OpenAIChat("http://x/v1", "m", transport=transport)
    result = ReActAgent(chat, default_registry(["calculator"])).run("2^10?")
    assert result.answer == "1024" and "tools" not in seen[0]
    assert seen[0]["stop"] and seen[1]["messages"][-1]["content"] == "Observation: 1024"


def test_server_errors_are_one_line():
    from llmlab.errors import LlmlabError

    def handle(request):
        return httpx.Response(400, json={"error": {"message": "model 'm' not found"}})

    chat = OpenAIChat("http://x/v1", "m", transport=httpx.MockTransport(handle))
    with pytest.raises(LlmlabError, match="server answered 400: model 'm' not found"):
        chat.complete([{"role": "user", "content": "hi"}])


def test_reply_dataclass_defaults():
    assert Reply("x").tool_calls == []


def test_constrained_replies_follow_the_action_format():
    import re

    from llmlab.agents.react import action_regex

    registry = default_registry(["calculator"])
    pattern = re.compile(action_regex(registry))
    assert pattern.fullmatch("Thought: multiply\nAction: calculator\nAction Input: 3 * 4")
    assert pattern.fullmatch("Thought: done\nFinal Answer: 12")
    assert not pattern.fullmatch("Thought: x\nAction: python\nAction Input: print(1)")
    assert pattern.fullmatch("Thought: x\nAction: calculator\nAction Input: 3 * 4 = 11")
    assert not pattern.fullmatch("Thought: x\nAction: calculator\nAction Input: 3 * 4 11 11")
    assert not pattern.fullmatch("12")
    both = re.compile(action_regex(default_registry(["calculator", "python"])))
    assert both.fullmatch("Thought: code\nAction: python\nAction Input: x = 2\nprint(x)")
    chat = ScriptedChat(["Thought: t\nFinal Answer: 1"])
    ReActAgent(chat, registry, constrain=True).run("q")
    assert chat.regexes == [action_regex(registry)]
