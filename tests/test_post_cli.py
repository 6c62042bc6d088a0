"""`llmlab train sft|lora|reward|dpo|ppo|grpo` and `llmlab sample best-of-n` end to end on a tiny saved model."""

import json
import math

import pytest
from tiny import save_tiny_llama

from llmlab.cli import main

COMMON = [
    "--set",
    "train.device=cpu",
    "--set",
    "train.progress=false",
    "--set",
    "diagnostics.every=0",
    "--set",
    "checkpoint.resume=false",
    "--set",
    "train.batch_size=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("post")
    save_tiny_llama(root / "model")
    qa = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
        }
        for i in range(8)
    ]
    (root / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in qa))
    prefs = [
        {"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(8)
    ]
    (root / "prefs.jsonl").write_text("\n".join(json.dumps(r) for r in prefs))
    arith = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    (root / "arith.jsonl").write_text("\n".join(json.dumps(r) for r in arith))
    return root


def run(method, root, *extra):
    args = [
        "train",
        method,
        "--set",
        f"model.name={root / 'model'}",
        "--set",
        f"run_dir={root / method}",
        "--set",
        "train.steps=2",
        *COMMON,
        *extra,
    ]
    assert main(args) == 0


def test_lora_sft_writes_a_peft_adapter(workspace, capsys):
    run(
        "lora",
        workspace,
        "--set",
        f"data.train={workspace / 'qa.jsonl'}",
        "--set",
        "data.seq_len=32",
        "--set",
        "data.packing=true",
        "--set",
        "data.eval_fraction=0.25",
    )
    summary = json.loads(capsys.readouterr().out)
    config = json.loads((workspace / "lora" / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and summary["step"] == 2 and "eval_loss" in summary
    lines = (workspace / "lora" / "metrics.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("kind") == "train" for line in lines)


def test_reward_dpo_grpo_ppo_and_best_of_n_run(workspace, capsys):
    run("reward", workspace, "--set", f"data.train={workspace / 'prefs.jsonl'}")
    assert (workspace / "reward" / "model" / "score_head.safetensors").exists()
    run(
        "dpo",
        workspace,
        "--set",
        f"data.train={workspace / 'prefs.jsonl'}",
        "--set",
        "lora.enabled=true",
        "--set",
        "dpo.loss_type=ipo",
        "--set",
        "lora.base_dtype=bf16",
        "--set",
        "dpo.precompute_ref_log_probs=true",
    )
    assert (workspace / "dpo" / "adapter" / "adapter_model.safetensors").exists()
    dpo_steps = [
        json.loads(line) for line in (workspace / "dpo" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(math.isfinite(r["loss"]) for r in dpo_steps if r.get("kind") == "train")
    rl = [
        "--set",
        f"data.train={workspace / 'arith.jsonl'}",
        "--set",
        "rl.max_new_tokens=4",
        "--set",
        "rl.group_size=2",
    ]
    run("grpo", workspace, *rl, "--set", "rl.kl_beta=0.1", "--set", "train.progress=true")
    # Off a terminal the progress lines are plain and show what an RL step is judged by.
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("step ")]
    assert lines and all("reward" in x and "kl" in x and "clipped" in x for x in lines)
    run("ppo", workspace, *rl, "--set", f"rl.reward_model={workspace / 'reward' / 'model'}")
    for method, keys in (
        ("grpo", ("reward", "kl", "policy/clipfrac")),
        ("ppo", ("objective/scores", "objective/kl", "policy/clipfrac", "loss/value")),
    ):
        steps = [
            json.loads(x) for x in (workspace / method / "metrics.jsonl").read_text().splitlines()
        ]
        steps = [r for r in steps if r.get("kind") == "train"]
        assert [r["step"] for r in steps] == [1, 2], method
        for r in steps:
            assert all(math.isfinite(r[k]) for k in keys), (method, r)
            assert 0.0 <= r["policy/clipfrac"] <= 1.0
        assert (
            steps[0]["policy/clipfrac"] == 0.0
        )  # the first update is on-policy: ratio 1, nothing clipped
    capsys.readouterr()


def _best_of_n(workspace, out, *extra):
    args = ["sample", "best-of-n", "--model", str(workspace / "model"), "--prompts", str(workspace / "arith.jsonl"),
            "--n", "3", "--keep", "2", "--max-new-tokens", "4", "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 0


def test_best_of_n_keeps_only_acceptable_samples(workspace, capsys):
    # A random tiny model never writes "answer is N": by default nothing is acceptable, so
    # nothing is kept (no wrong answer becomes SFT data) and the summary says so.
    out = workspace / "bon.jsonl"
    _best_of_n(workspace, out, "--reward", "format+length_penalty")
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats["kept"] == 0 and out.read_text() == ""
    assert (
        stats["prompts_without_acceptable_sample"] == 4
        and stats["acceptance"] == "the checkable answer format"
    )
    assert "4 prompts had none" in captured.err
    assert "best-of-n: 4/4 prompts (100%)" in captured.err  # plain progress lines off a terminal
    # --min-reward overrides the reward's own test.
    _best_of_n(workspace, out, "--reward", "format+length_penalty", "--min-reward", "-100")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["messages"][-1]["role"] == "assistant"
    assert json.loads(capsys.readouterr().out)["kept"] == 8


def test_reward_acceptance_rules():
    from llmlab.posttrain.rewards import make_reward

    example = {"answer": "7"}
    exact = make_reward("exact_answer")
    assert exact.acceptance == "a correct answer"
    assert exact.accepts("so 7", [], example) and not exact.accepts("so 8", [], example)
    both = make_reward("exact_answer+0.2*format")
    assert both.accepts("the answer is 7", [], example) and not both.accepts("7", [], example)
    assert both("the answer is 7", [], example) == 1.2
    assert make_reward("length_penalty").accepts is None


def test_bad_config_is_one_line_error(workspace, capsys):
    assert (
        main(
            [
                "train",
                "dpo",
                "--set",
                f"model.name={workspace / 'model'}",
                "--set",
                "dpo.loss_type=hinge",
                *COMMON,
            ]
        )
        == 1
    )
    assert "dpo.loss_type" in capsys.readouterr().err
