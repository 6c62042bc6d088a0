"""DDP through torchrun (2 CPU processes, gloo) matches one process with the same global batch."""

import os
import subprocess
import sys

import torch
from train_fixtures import tiny_pretrain_config, tiny_tokenizer  # noqa: F401 (fixture)

from llmlab.formats.hf import read_hf_folder
from llmlab.train.config import PretrainConfig, load_config
from llmlab.train.plot import latest_per_step, read_metrics
from llmlab.train.pretrain import run_pretrain

STEPS = 5


def torchrun(config, strategy):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "llmlab.train",
        "pretrain",
        "--config",
        str(config),
        "--set",
        f"distributed.strategy={strategy}",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def train_losses(run_dir):
    return [r["loss"] for r in latest_per_step(read_metrics(run_dir), "train")]


def test_ddp_two_processes_match_single_process(tmp_path, tiny_tokenizer):
    single = tiny_pretrain_config(
        tmp_path / "single", tiny_tokenizer, steps=STEPS, batch_size=4, train={"grad_accum": 2}
    )
    ddp = tiny_pretrain_config(
        tmp_path / "ddp", tiny_tokenizer, steps=STEPS, batch_size=4, train={"grad_accum": 2}
    )
    run_pretrain(load_config(PretrainConfig, single))
    result = torchrun(ddp, "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert len(got) == STEPS and len(expected) == STEPS
    assert max(abs(a - b) for a, b in zip(expected, got)) < 1e-4, (expected, got)
    assert expected[-1] < expected[0]  # it trained
    assert (tmp_path / "ddp" / "model" / "config.json").exists()  # rank 0 saved the final model


def test_fsdp2_fully_shard_matches_single_process(tmp_path, tiny_tokenizer):
    single = tiny_pretrain_config(tmp_path / "single", tiny_tokenizer, steps=3, batch_size=4)
    fsdp = tiny_pretrain_config(tmp_path / "fsdp", tiny_tokenizer, steps=3, batch_size=4)
    run_pretrain(load_config(PretrainConfig, single))
    result = torchrun(fsdp, "fsdp")
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = train_losses(tmp_path / "single"), train_losses(tmp_path / "fsdp")
    assert len(got) == 3 and max(abs(a - b) for a, b in zip(expected, got)) < 1e-4, (expected, got)
    single_weights = read_hf_folder(tmp_path / "single" / "model")[1]
    fsdp_weights = read_hf_folder(tmp_path / "fsdp" / "model")[1]  # gathered from both shards
    assert single_weights.keys() == fsdp_weights.keys()
    assert all(
        torch.allclose(single_weights[k], fsdp_weights[k], atol=1e-5) for k in single_weights
    )
