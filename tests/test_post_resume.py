"""Exact resume for RL: a GRPO run SIGKILLed mid-way and resumed logs the same losses and rewards,
bit for bit, as an uninterrupted run — the rollout source saves its prompt cursor, sampling RNG
and the rollout it is still reusing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from tiny import save_tiny_llama

from llmlab.train.plot import latest_per_step, read_metrics

# Runs `llmlab train grpo` with a callback that SIGKILLs the process after step `kill_at`.
SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from llmlab.train import trainer as T
    kill_at = int(sys.argv[1])
    original = T.Trainer.__init__
    def with_killer(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if kill_at:
            self.callbacks.append(
                lambda trainer, record: trainer.step == kill_at and os.kill(os.getpid(), signal.SIGKILL))
    T.Trainer.__init__ = with_killer
    from llmlab.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def grpo(tmp_path, run_dir, kill_at: int, resume: bool):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    args = ["train", "grpo", "--set", f"model.name={tmp_path / 'model'}", "--set", f"run_dir={run_dir}",
            "--set", f"data.train={tmp_path / 'arith.jsonl'}", "--set", "train.steps=6", "--set", "train.device=cpu",
            "--set", "train.progress=false", "--set", "diagnostics.every=0", "--set", "checkpoint.every=2",
            "--set", f"checkpoint.resume={'true' if resume else 'false'}", "--set", "rl.group_size=2",
            "--set", "rl.prompts_per_step=2", "--set", "rl.reuse=2", "--set", "rl.max_new_tokens=4",
            "--set", "rl.kl_beta=0.1", "--set", "rl.temperature=1.0"]  # fmt: skip
    return subprocess.run([sys.executable, str(script), str(kill_at), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def steps(run_dir):
    return [
        (r["step"], r["loss"], r["reward"]) for r in latest_per_step(read_metrics(run_dir), "train")
    ]


def test_grpo_sigkill_and_resume_gives_identical_losses(tmp_path):
    save_tiny_llama(tmp_path / "model")
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    (tmp_path / "arith.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    straight = grpo(tmp_path, tmp_path / "straight", 0, resume=False)
    assert straight.returncode == 0, straight.stderr
    # Killed after step 3: the checkpoint at step 2 sits mid-way through a reused rollout
    # (reuse=2 is rollout 1 for steps 1-2, rollout 2 for steps 3-4), and the cursor has moved.
    crashed = grpo(tmp_path, tmp_path / "killed", 3, resume=False)
    assert crashed.returncode == -signal.SIGKILL
    resumed = grpo(tmp_path, tmp_path / "killed", 0, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert any(r["kind"] == "resume" and r["step"] == 2 for r in read_metrics(tmp_path / "killed"))
    expected = steps(tmp_path / "straight")
    assert (
        len(expected) == 6 and len({r for _, _, r in expected}) > 1
    )  # rewards vary: sampling matters
    assert steps(tmp_path / "killed") == expected  # exact float equality
