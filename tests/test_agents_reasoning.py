"""Reasoning methods: answer extraction, the majority vote, PoT programs through the sandbox, and
`solve` end to end on a scripted engine (the real-model numbers are in docs/agents.md).

    PYTHONPATH=src python -m pytest tests/test_agents_reasoning.py -q
"""

import json
from dataclasses import dataclass

import pytest
from tiny import tiny_tokenizer

from llmlab.agents.reasoning import (
    add_print,
    extract_answer,
    extract_code,
    majority_vote,
    program_answers,
    read_problems,
    search_prompts,
    solve,
)
from llmlab.errors import LlmlabError


def test_majority_vote():
    assert majority_vote(["3", "5", "3", None, "5", "3"]) == ("3", 3)
    assert majority_vote(["7", "8", "8", "7"]) == ("7", 2)  # a tie goes to the first seen
    assert majority_vote([None, None]) == (None, 0)
    assert majority_vote([]) == (None, 0)


def test_extract_answer():
    assert extract_answer("3 + 4 = 7, 7 * 2 = 14. The answer is 14.") == "14"
    assert extract_answer("The answer is 1,200 apples. Check: 2 boxes") == "1200"
    assert extract_answer("so 12.0 left") == "12"
    assert extract_answer("no idea") is None


def test_extract_code_and_add_print():
    reply = "Here:\n```python\nx = 3\ny = x * 4\n```\nThis prints 12."
    assert extract_code(reply) == "x = 3\ny = x * 4"
    assert extract_code("```python\nprint(1)\n") == "print(1)"  # cut off by max_tokens
    assert add_print("x = 3\ny = x * 4") == "x = 3\ny = x * 4\nprint(y)"
    assert add_print("3 + 4") == "3 + 4\nprint(3 + 4)"
    assert add_print("print(5)") == "print(5)"


def test_program_answers_run_in_the_sandbox(monkeypatch):
    import llmlab.agents.reasoning as reasoning

    monkeypatch.setattr(reasoning, "PROGRAM_TIMEOUT_S", 1.0)
    programs = [
        "print(6 * 7)",
        "print('total:', 10 - 3)",
        "print(1 / 0)",
        "while True: pass",
        "print(6 * 7)",
    ]
    assert program_answers(programs) == ["42", "7", None, None, "42"]


def test_bundled_problems_and_splits_do_not_overlap():
    splits = {s: read_problems(f"bundled:arith-word-{s}.jsonl") for s in ("train", "dev", "test")}
    assert [len(v) for v in splits.values()] == [400, 100, 200]
    questions = [set(p["question"] for p in rows) for rows in splits.values()]
    assert not (
        questions[0] & questions[1] or questions[0] & questions[2] or questions[1] & questions[2]
    )
    for p in splits["test"]:
        assert int(p["answer"]) >= 0


def test_bad_problem_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(LlmlabError, match="line 1 needs 'question' and 'answer'"):
        read_problems(str(bad))
    with pytest.raises(LlmlabError, match="problem file not found"):
        read_problems("bundled:nope.jsonl")


@dataclass
class _Out:
    text: str
    token_ids: list


@dataclass
class _Request:
    outputs: list


class ScriptedLLM:
    """Stands in for `LLM`: replies per question from a script, checks n and temperature."""

    def __init__(self, script: dict):
        self.tokenizer = tiny_tokenizer()
        self.script, self.calls = script, []

    def generate(self, prompts, params, progress=None):
        self.calls.append(params)
        results = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            question = next(q for q in self.script if q in text)
            replies = self.script[question][: params.n]
            assert len(replies) == params.n
            results.append(_Request([_Out(r, [0] * len(r.split())) for r in replies]))
        return results


PROBLEMS = [
    {"question": "What is 2 + 3?", "answer": "5"},
    {"question": "What is 4 * 4?", "answer": "16"},
]


def test_cot_self_consistency_votes_over_n_samples():
    llm = ScriptedLLM(
        {
            "What is 2 + 3?": ["The answer is 5.", "The answer is 6.", "so 5", "The answer is 5."],
            "What is 4 * 4?": ["The answer is 8.", "The answer is 16.", "The answer is 8.", "16"],
        }
    )
    result = solve(llm, PROBLEMS, "cot-sc", n=4)
    assert llm.calls[0].n == 4 and llm.calls[0].temperature > 0
    assert (result.correct, result.total) == (1, 2)
    assert [r["predicted"] for r in result.rows] == ["5", "8"]
    assert result.rows[0]["votes"] == 3 and result.completion_tokens > 0
    greedy = solve(llm, PROBLEMS, "cot", n=4)
    assert llm.calls[1].n == 1 and llm.calls[1].temperature == 0
    assert [r["predicted"] for r in greedy.rows] == ["5", "8"]  # the first sample only


def test_pot_runs_the_programs_and_votes_on_what_they_print(monkeypatch):
    import llmlab.agents.reasoning as reasoning

    monkeypatch.setattr(reasoning, "PROGRAM_TIMEOUT_S", 1.0)
    llm = ScriptedLLM(
        {
            "What is 2 + 3?": [
                "```python\nprint(2 + 3)\n```",
                "```python\nx = 2 - 3\n```",
                "```python\nimport os\nprint(2 + 3)\n```",
            ],
            "What is 4 * 4?": ["```python\nwhile True: pass\n```", "print(4 * 4)", "print(4 ** 4)"],
        }
    )
    result = solve(llm, PROBLEMS, "pot-sc", n=3)
    assert [r["answers"] for r in result.rows] == [["5", "-1", "5"], [None, "16", "256"]]
    assert result.correct == 2 and result.sandbox_seconds > 0


def test_prompt_search_picks_by_dev_and_reports_test():
    good = "The answer is 5."
    llm = ScriptedLLM({"What is 2 + 3?": [good], "What is 4 * 4?": ["The answer is 16."]})
    report = search_prompts(llm, PROBLEMS[:1], PROBLEMS[1:], "cot")
    assert {r["prompt"] for r in report["dev"]} >= {"cot", "cot-equations", "cot-plan"}
    assert report["best"] in {r["prompt"] for r in report["dev"]}
    assert report["test"]["accuracy"] == 1.0
    json.dumps(report)


def test_wrong_prompt_family_is_refused():
    with pytest.raises(LlmlabError, match="is for pot, not cot"):
        solve(ScriptedLLM({}), PROBLEMS, "cot", prompt="pot")
    with pytest.raises(LlmlabError, match="unknown method"):
        solve(ScriptedLLM({}), PROBLEMS, "tot")


def test_prompt_prefill_starts_the_reply_and_stop_ends_it(monkeypatch):
    import llmlab.agents.reasoning as reasoning

    monkeypatch.setattr(reasoning, "PROGRAM_TIMEOUT_S", 2.0)
    llm = ScriptedLLM({"What is 2 + 3?": ["print(2 + 3)\n"], "What is 4 * 4?": ["x = 4 * 4\n"]})
    result = solve(llm, PROBLEMS, "pot", prompt="pot-fenced")
    assert llm.calls[0].stop == ["```"]
    assert [r["predicted"] for r in result.rows] == ["5", "16"]  # the second via add_print
    assert result.rows[0]["sample"].startswith("```python\n")


def test_stop_strings_follow_the_prompt_else_the_chat_format():
    from types import SimpleNamespace

    from llmlab.agents.reasoning import stop_strings

    qa = SimpleNamespace(chat_stop_strings=["\nQuestion:", "\n\n"])  # a base model's Q/A frame
    assert stop_strings({"stop": ["```"]}, qa) == ["```"]
    assert stop_strings({}, qa) == ["\nQuestion:", "\n\n", "\nAnswer:"]
    assert stop_strings({}, SimpleNamespace(chat_stop_strings=[])) == []
    assert stop_strings({}, object()) == []
