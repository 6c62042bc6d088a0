"""Exact resume: a run SIGKILLed mid-way and resumed logs the same loss sequence, bit for bit, as an
uninterrupted run; checkpoints are atomic and only the last k are kept; RNG states are restored."""

import os
import signal
import subprocess
import sys
import textwrap

import torch
from torch import nn
from train_fixtures import tiny_pretrain_config, tiny_tokenizer  # noqa: F401 (fixture)

from llmlab.train.checkpoint import list_checkpoints, save_checkpoint
from llmlab.train.config import PretrainConfig, TrainerConfig, from_dict, load_config
from llmlab.train.data import TensorBatches
from llmlab.train.plot import latest_per_step, read_metrics
from llmlab.train.pretrain import run_pretrain
from llmlab.train.trainer import Trainer

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from llmlab.train.config import PretrainConfig, load_config
    from llmlab.train.pretrain import run_pretrain
    kill_at = int(sys.argv[2])
    def killer(trainer, record):
        if trainer.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    run_pretrain(load_config(PretrainConfig, sys.argv[1]), callbacks=[killer] if kill_at else [])
""")


def run_script(tmp_path, config_path, kill_at):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), str(config_path), str(kill_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in latest_per_step(read_metrics(run_dir), "train")]


def test_sigkill_and_resume_gives_identical_losses(tmp_path, tiny_tokenizer):
    straight = tiny_pretrain_config(
        tmp_path / "straight", tiny_tokenizer, steps=8, checkpoint_every=2
    )
    killed = tiny_pretrain_config(tmp_path / "killed", tiny_tokenizer, steps=8, checkpoint_every=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (OMP_NUM_THREADS=1): same reduction order
    try:
        run_pretrain(load_config(PretrainConfig, straight))
    finally:
        torch.set_num_threads(threads)
    crash = run_script(tmp_path, killed, 5)
    assert crash.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(tmp_path / "killed" / "checkpoints")] == [
        "step_00000002.pt",
        "step_00000004.pt",
    ]
    resumed = run_script(tmp_path, killed, 0)
    assert resumed.returncode == 0, resumed.stderr
    records = read_metrics(tmp_path / "killed")
    assert any(r["kind"] == "resume" and r["step"] == 4 for r in records)
    assert len(losses(tmp_path / "straight")) == 8
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")  # exact float equality


def noisy_objective(model, batch):
    # Uses the global torch RNG, so resuming must restore it to reproduce the losses.
    x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
    return nn.functional.mse_loss(model(x), batch["y"]), {"tokens": len(x)}


def test_resume_restores_rng_optimizer_and_data_position(tmp_path):
    data = {"x": torch.randn(40, 6, generator=torch.Generator().manual_seed(0))}
    data["y"] = data["x"].sum(-1, keepdim=True)

    def make(run_dir, steps):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
        config = from_dict(
            TrainerConfig,
            {
                "run_dir": str(run_dir),
                "optim": {"name": "adam", "lr": 1e-2, "warmup_steps": 2},
                "train": {
                    "steps": steps,
                    "batch_size": 8,
                    "progress": False,
                    "deterministic": True,
                },
                "checkpoint": {"every": 3, "keep": 1},
            },
        )
        return Trainer(model, noisy_objective, TensorBatches(data, 8, seed=1), config)

    full = make(tmp_path / "full", 9)
    full.fit()
    part = make(tmp_path / "part", 9)
    part.config.train.steps = 3  # stop early: only the step budget differs
    part.fit()
    rest = make(tmp_path / "part", 9)
    rest.fit()
    assert rest.history[0]["step"] == 4
    assert [r["loss"] for r in part.history + rest.history] == [r["loss"] for r in full.history]
    assert [r["lr"] for r in part.history + rest.history] == [r["lr"] for r in full.history]


def test_checkpoints_atomic_and_pruned(tmp_path):
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000004.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_rerunning_a_finished_run_says_so_and_logs_nothing(tmp_path, tiny_tokenizer):
    """`llmlab train pretrain` on a run_dir that already reached train.steps: a one-line error
    naming the step and folder, and no empty summary ("loss": null) added to metrics.jsonl."""
    config = tiny_pretrain_config(tmp_path / "run", tiny_tokenizer, steps=2, checkpoint_every=2)
    command = [sys.executable, "-m", "llmlab", "train", "pretrain", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    before = read_metrics(tmp_path / "run")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode != 0
    assert (
        f"run already complete at step 2 in {tmp_path / 'run'}; pick a new run_dir or "
        "--set checkpoint.resume=false"
    ) in again.stderr
    after = read_metrics(tmp_path / "run")
    summaries = [r for r in after if r["kind"] == "summary"]
    assert len(summaries) == 1 and summaries[0]["loss"] is not None
    assert [r for r in after if r["kind"] == "train"] == [r for r in before if r["kind"] == "train"]
