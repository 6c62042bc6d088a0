"""The ReAct agent on the real packaged SmolLM2-135M for one calculator question (slow).

    PYTHONPATH=src python -m pytest tests/test_agents_real.py -q

Unaided, the 135M model answers "37 * 41" wrongly (1447 in our runs) and ignores the action format;
with the scaffold (replies prefilled with "Action:" then "Final Answer:") it writes the calculator
input itself and copies the tool's result, so the right answer proves the tool was used.
"""

import json

import pytest

from llmlab.agents.builtin_tools import default_registry
from llmlab.agents.chat_models import EngineChat
from llmlab.agents.react import ReActAgent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm():
    from llmlab.engine import LLM

    return LLM("smollm2-135m-instruct", kv_memory="64MiB")


def test_react_calculator_question_on_smollm2(llm, tmp_path):
    trace = tmp_path / "trace.jsonl"
    agent = ReActAgent(
        EngineChat(llm, max_tokens=32),
        default_registry(["calculator"]),
        max_steps=3,
        trace=str(trace),
        scaffold=True,
    )
    result = agent.run("What is 37 * 41?")
    assert result.stopped == "answer" and "1517" in result.answer
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    actions = [e for e in events if e["type"] == "action"]
    assert actions and actions[0]["tool"] == "calculator"
    assert [e["text"] for e in events if e["type"] == "observation"][0] == "1517"
