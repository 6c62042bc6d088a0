"""PoT training data: the sandbox reward (`program_answer`), rejection sampling through best-of-n
on a scripted sampler, and `llmlab reason --adapter` on a tiny random model.

    PYTHONPATH=src python -m pytest tests/test_agents_pot_data.py -q
"""

import json
import os

import pytest
import torch
from tiny import save_tiny_llama

import llmlab.agents.reasoning as reasoning
import llmlab.agents.sandbox as sandbox
from llmlab.cli import main
from llmlab.errors import LlmlabError
from llmlab.posttrain import rewards

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def sandbox_calls(monkeypatch):
    """Record every program the sandbox is asked to run (and start with an empty reward cache)."""
    calls = []
    real = sandbox.run_python

    def recording(code, **limits):
        calls.append(code)
        return real(code, **limits)

    monkeypatch.setattr(sandbox, "run_python", recording)
    monkeypatch.setattr(reasoning, "PROGRAM_TIMEOUT_S", 1.0)
    rewards._program_output.cache_clear()
    yield calls
    rewards._program_output.cache_clear()


def test_sandbox_reward_accepts_only_programs_that_print_the_answer(sandbox_calls):
    reward = rewards.make_reward("program_answer")
    assert reward.acceptance == "a program that prints the correct answer in the sandbox"
    example = {"answer": "12"}
    right = "```python\nboxes = 3\nper_box = 4\nprint(boxes * per_box)\n```"
    assert reward(right, [], example) == 1.0 and reward.accepts(right, [], example)
    assert reward.accepts("x = 3 * 4", [], example)  # no print: the last assignment is printed
    assert not reward.accepts("print(3 + 4)", [], example)  # wrong
    assert not reward.accepts("print(12 / 0)", [], example)  # crash
    assert not reward.accepts("while True: pass\nprint(12)", [], example)  # timeout
    assert not reward.accepts("The answer is 12.", [], example)  # prose is not a program
    assert not reward.accepts("print(12)", [], {})  # no answer to check against
    # every program ran through the sandbox, once each even though accepts() re-scores (cache);
    # the unparseable prose was refused before any process started
    assert sandbox_calls.count("boxes = 3\nper_box = 4\nprint(boxes * per_box)") == 1
    assert len(sandbox_calls) == 5
    assert make_alias_same()


def make_alias_same() -> bool:
    return rewards.RULES["pot_sandbox"] is rewards.RULES["program_answer"]


def test_sandbox_reward_never_runs_the_program_in_this_process(sandbox_calls):
    reward = rewards.make_reward("pot_sandbox")
    # A program that would print this process's pid if it ran here, and mark the module it imports.
    program = "import os, llmlab\nllmlab.PWNED = True\nprint(os.getpid())"
    assert not reward.accepts(program, [], {"answer": str(os.getpid())})
    import llmlab

    assert not hasattr(llmlab, "PWNED") and sandbox_calls == [program]


class _ScriptedSampler:
    """Stands in for best-of-n's sampler: replies chosen by the question in the last user turn."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.prompts = tokenizer, replies, []

    def __call__(self, model, prompts, n, max_new_tokens, temperature, eos, pad, generator, engine):
        from llmlab.posttrain.group import Group

        groups = []
        for example in prompts:
            self.prompts.append(self.tokenizer.decode(example["prompt_ids"]))
            question = example["prompt"][-1]["content"]
            texts = next(v for k, v in self.replies.items() if k in question)
            assert len(texts) == n and temperature > 0
            rows = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            groups.append(Group(ids, mask, 0))
        return groups


def test_build_pot_data_keeps_only_verified_programs(tmp_path, monkeypatch, sandbox_calls):
    import llmlab.posttrain.engine_rollout as engine_rollout
    import llmlab.posttrain.rollout as rollout
    from llmlab.agents.pot_data import build_pot_data

    _, tokenizer = save_tiny_llama(tmp_path / "model")
    problems = [
        {"question": "Ana has 5 eggs and buys 2 more. How many eggs does Ana have now?", "answer": "7"},
        {"question": "There are 3 boxes with 4 cards in each box. How many cards?", "answer": "12"},
    ]  # fmt: skip
    replies = {
        "Ana has 5": ["print(5 - 2)", "```python\neggs = 5\nbought = 2\neggs + bought\n```", "x ="],
        "3 boxes": ["print(3 + 4)", "print(1 / 0)", "print(cards)"],  # none right
    }
    sampler = _ScriptedSampler(tokenizer, replies)
    monkeypatch.setattr(rollout, "sample_groups", sampler)
    monkeypatch.setattr(engine_rollout, "engine_sampler_for", lambda *a, **k: None)
    out = tmp_path / "verified.jsonl"
    stats = build_pot_data(str(tmp_path / "model"), problems, str(out), n=3, shots="pot-shots")
    assert stats["problems_solved"] == 1 and stats["programs_kept"] == 1 and stats["samples"] == 6
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["source"] == "model"
    system, user, assistant = rows[0]["messages"]
    assert system["role"] == "system" and "Ana has 5 eggs" in user["content"]
    assert "Kim has 12 shells" not in user["content"]  # the shots are not part of the SFT row
    # the program that ran (print added), fenced
    assert (
        assistant["content"]
        == "```python\neggs = 5\nbought = 2\neggs + bought\nprint(eggs + bought)\n```"
    )
    # ... but the sampler saw the worked programs before each question
    assert all("Kim has 12 shells" in p and "print(shells + bought)" in p for p in sampler.prompts)
    # a failed build never replaces the last good file
    monkeypatch.setattr(rollout, "sample_groups", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_pot_data(str(tmp_path / "model"), problems, str(out), n=3)
    assert len(out.read_text().splitlines()) == 1
    with pytest.raises(LlmlabError, match="not a pot-shots file"):
        build_pot_data(str(tmp_path / "model"), problems, str(out), shots="pot-fenced")


def test_reason_applies_an_adapter(tmp_path, capsys):
    from llmlab.adapters import save_adapter
    from llmlab.loading import load
    from llmlab.nn.lora import add_lora, lora_layers

    save_tiny_llama(tmp_path / "model")
    model, _ = load(str(tmp_path / "model"), device="cpu", dtype="float32")
    add_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
    torch.manual_seed(1)
    for layer in lora_layers(model).values():  # a non-zero update, so the adapter changes outputs
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    save_adapter(model, tmp_path / "adapter")
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "\n".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(3)
        )
    )

    def reason(*extra):
        out = tmp_path / f"out{len(extra)}.json"
        args = ["reason", "--model", str(tmp_path / "model"), "--problems", str(problems),
                "--method", "greedy", "--max-tokens", "8", "--out", str(out), *extra]  # fmt: skip
        assert main(args) == 0
        return json.loads(out.read_text())

    base = reason()
    adapted = reason("--adapter", str(tmp_path / "adapter"))
    assert adapted["adapter"] == str(tmp_path / "adapter") and base["adapter"] == ""
    samples = [[r["sample"] for r in run["results"][0]["rows"]] for run in (base, adapted)]
    assert samples[0] != samples[1]
    assert main(["reason", "--model", str(tmp_path / "model"), "--problems", str(problems),
                 "--adapter", str(tmp_path / "missing")]) != 0  # fmt: skip
    assert "missing" in capsys.readouterr().err


def test_teacher_programs_are_labelled_and_checked(tmp_path, sandbox_calls, capsys):
    from llmlab.agents.pot_data import teacher_rows
    from llmlab.agents.reasoning import read_problems

    out = tmp_path / "teacher.jsonl"  # the CLI writes them without loading or sampling a model
    args = ["reason", "--teacher", str(out), "--problems", "bundled:arith-word-train.jsonl"]
    assert main([*args, "--limit", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["teacher"]["programs"] == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    problems = read_problems("bundled:arith-word-train.jsonl")[:3]
    assert [r["source"] for r in rows] == ["teacher"] * 3 and len(sandbox_calls) == 3
    assert rows[0]["messages"][1]["content"].endswith(problems[0]["question"])
    assert rows[0]["messages"][2]["content"].startswith("```python\n")
    assert teacher_rows(problems + [{"question": "not a train problem", "answer": "1"}]) == rows
    with pytest.raises(LlmlabError, match="none of these problems"):
        teacher_rows([{"question": "not a train problem", "answer": "1"}])
