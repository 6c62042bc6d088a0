"""Trainer core: config loading and overrides, optimizers, schedules, accumulation, clipping,
bf16 autocast, init schemes, run folder, the tiny end-to-end pretraining run and bad-input errors."""

import json
import math

import pytest
import torch
import transformers
from torch import nn
from train_fixtures import tiny_pretrain_config, tiny_pretrain_values, tiny_tokenizer  # noqa: F401 (fixture)

from llmlab.cli import main as cli_main
from llmlab.train.config import ConfigError, TrainerConfig, from_dict, load_config
from llmlab.train.data import TensorBatches
from llmlab.train.optim import apply_init, build_scheduler, lr_multiplier
from llmlab.train.trainer import Trainer


def regression_data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return {"x": x, "y": x @ torch.linspace(-1, 1, 8).unsqueeze(1)}


def mse(model, batch):
    return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {"tokens": len(batch["x"])}


def make_trainer(tmp_path, model=None, batch_size=8, **sections):
    values = {
        "run_dir": str(tmp_path),
        "train": {"steps": 30, "batch_size": batch_size, "progress": False},
        "diagnostics": {"every": 0},
        "checkpoint": {"resume": False},
    }
    for key, value in sections.items():
        values.setdefault(key, {}).update(value)
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return Trainer(
        model, mse, TensorBatches(regression_data(), batch_size), from_dict(TrainerConfig, values)
    )


def test_config_yaml_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\ntrain:\n  steps: 5\n")
    config = load_config(
        TrainerConfig,
        path,
        ["optim.name=sgd", "train.clip_grad_norm=null", "optim.betas=[0.8,0.9]"],
    )
    assert config.optim.lr == 3e-4 and isinstance(
        config.optim.lr, float
    )  # YAML reads 3e-4 as a string
    assert (
        config.optim.name == "sgd"
        and config.train.clip_grad_norm is None
        and config.optim.betas == (0.8, 0.9)
    )
    with pytest.raises(ConfigError, match="unknown config key 'optim.lr_rate'"):
        load_config(TrainerConfig, path, ["optim.lr_rate=1"])
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(TrainerConfig, path, ["train.steps=many"])


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_every_optimizer_reduces_loss(tmp_path, name):
    lr = {"sgd": 0.05, "rmsprop": 3e-3}.get(name, 1e-2)
    trainer = make_trainer(tmp_path, optim={"name": name, "lr": lr, "warmup_steps": 3})
    trainer.fit()
    losses = [r["loss"] for r in trainer.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_schedules():
    config = TrainerConfig().optim
    config.warmup_steps, config.min_lr_ratio = 10, 0.1
    assert lr_multiplier(0, config, 110) == pytest.approx(0.1)
    assert lr_multiplier(10, config, 110) == pytest.approx(1.0)
    assert lr_multiplier(60, config, 110) == pytest.approx(0.55)  # cosine half-way
    assert lr_multiplier(110, config, 110) == pytest.approx(0.1)
    config.schedule = "linear"
    assert lr_multiplier(35, config, 110) == pytest.approx(0.1 + 0.9 * 0.75)
    config.schedule = "constant"
    assert lr_multiplier(100, config, 110) == 1.0


def test_gradient_accumulation_equals_big_batch(tmp_path):
    big = make_trainer(
        tmp_path / "a",
        batch_size=8,
        train={"steps": 3, "batch_size": 8},
        optim={"name": "sgd", "lr": 0.1},
    )
    accumulated = make_trainer(
        tmp_path / "b",
        batch_size=4,
        train={"steps": 3, "batch_size": 4, "grad_accum": 2},
        optim={"name": "sgd", "lr": 0.1},
    )
    big.fit()
    accumulated.fit()
    for p, q in zip(big.model.parameters(), accumulated.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_clip_by_value_and_norm(tmp_path):
    seen = {}

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            seen["max"] = max(float(g.abs().max()) for g in grads)
            seen["norm"] = float(torch.nn.utils.get_total_norm(grads))
            return super().step(closure)

    trainer = make_trainer(
        tmp_path, train={"steps": 1, "clip_grad_value": 1e-3, "clip_grad_norm": None}
    )
    trainer.optimizer = Spy(trainer.model.parameters(), lr=0.1)
    trainer.scheduler = build_scheduler(trainer.optimizer, trainer.config.optim, 1)
    trainer.fit()
    assert seen["max"] <= 1e-3 + 1e-9
    trainer = make_trainer(tmp_path / "n", train={"steps": 1, "clip_grad_norm": 1e-2})
    trainer.optimizer = Spy(trainer.model.parameters(), lr=0.1)
    trainer.scheduler = build_scheduler(trainer.optimizer, trainer.config.optim, 1)
    trainer.fit()
    assert seen["norm"] == pytest.approx(1e-2, rel=1e-4)
    assert trainer.history[0]["grad_norm"] > 1e-2  # the logged raw norm is before clipping


def test_bf16_autocast_trains(tmp_path):
    trainer = make_trainer(tmp_path, train={"precision": "bf16"}, optim={"lr": 1e-2})
    seen = []
    trainer.objective = lambda m, b: seen.append(m[0](b["x"]).dtype) or mse(m, b)
    trainer.fit()
    assert seen[0] == torch.bfloat16
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]


def test_init_schemes():
    layer = nn.Linear(400, 300)
    apply_init(layer, "kaiming")
    assert (
        layer.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.05)
        and layer.bias.abs().max() == 0
    )
    apply_init(layer, "xavier")
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 700), rel=0.05)
    apply_init(layer, "normal", std=0.02)
    assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_pretrain_end_to_end_hf_folder_and_plot(tmp_path, tiny_tokenizer, capsys):
    config = tiny_pretrain_config(
        tmp_path / "run",
        tiny_tokenizer,
        steps=60,
        batch_size=8,
        optim={"lr": 1e-2, "warmup_steps": 5},
        train={"eval_every": 30},
    )
    assert (
        cli_main(["train", "pretrain", "--config", str(config), "--set", "train.log_every=2"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["eval_loss"] < summary["unigram_entropy"]
    )  # it learned more than token frequencies
    run = tmp_path / "run"
    assert (run / "config.yaml").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"train", "eval", "diag", "summary", "final"} <= kinds
    assert [r["step"] for r in records if r["kind"] == "train"][:3] == [2, 4, 6]
    hf = transformers.AutoModelForCausalLM.from_pretrained(run / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(run / "model")
    ids = torch.tensor([tokenizer("Pia walked near the old forest.")["input_ids"]])
    from llmlab.formats.hf import read_hf_folder
    from llmlab.models.llama import model_from_hf

    ours = model_from_hf(*read_hf_folder(run / "model"))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-4)
    assert cli_main(["plot", str(run)]) == 0
    assert (run / "training.png").stat().st_size > 1000 and (
        run / "gradient_flow.png"
    ).stat().st_size > 1000


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"corpus": ["EMPTY"]}}, "corpus is empty"),
        ({"data": {"tokenizer": "/nonexistent/tok"}}, "tokenizer not found"),
        ({"data": {"seq_len": 200}}, "beyond the model's context"),
        ({"model": {"hidden_sise": 32}}, "unknown config key 'model.hidden_sise'"),
        ({"optim": {"lr_rate": 1}}, "unknown config key 'optim.lr_rate'"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, tiny_tokenizer, capsys, change, message):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    values = tiny_pretrain_values(tmp_path / "run", tiny_tokenizer)
    for section, entries in change.items():
        entries = {
            k: [str(tmp_path / "empty.txt")] if v == ["EMPTY"] else v for k, v in entries.items()
        }
        values[section].update(entries) if section in values else values.update({section: entries})
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    assert cli_main(["train", "pretrain", "--config", str(tmp_path / "c.yaml")]) == 1
    assert message in capsys.readouterr().err
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or '"train"' not in metrics.read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a grad scaler needs CUDA")
def test_fp16_grad_scaler_on_cuda(tmp_path):
    trainer = make_trainer(
        tmp_path, train={"precision": "fp16", "device": "cuda"}, optim={"lr": 1e-2}
    )
    trainer.fit()
    assert trainer.scaler is not None and trainer.history[-1]["loss"] < trainer.history[0]["loss"]


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        make_trainer(tmp_path, train={"precision": "fp16", "device": "cpu"})
