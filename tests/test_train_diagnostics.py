"""Diagnostics flag vanishing gradients (deep sigmoid MLP) but not a ReLU+residual+LayerNorm MLP,
flag exploding gradients under a large init until clipping is on, and the NaN guard skips steps."""

import math

import torch
from torch import nn

from llmlab.train import diagnostics as diag
from llmlab.train.config import TrainerConfig, from_dict
from llmlab.train.data import TensorBatches
from llmlab.train.trainer import Trainer

DEPTH, WIDTH = 12, 32


class SigmoidMLP(nn.Module):
    def __init__(self):
        super().__init__()
        layers = []
        for _ in range(DEPTH):
            layers += [nn.Linear(WIDTH, WIDTH), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(WIDTH, 4))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return x + torch.relu(self.linear(self.norm(x)))


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x):
        return self.head(self.blocks(x))


class ReLUMLP(nn.Module):
    def __init__(self, depth=8):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(WIDTH, 4))

    def forward(self, x):
        return self.net(x)


def classification_objective(model, batch):
    logits = model(batch["x"])
    return nn.functional.cross_entropy(logits, batch["y"]), {"tokens": len(batch["y"])}


def toy_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, WIDTH, generator=g)
    y = x[:, :4].argmax(-1)
    return TensorBatches({"x": x, "y": y}, batch_size=32)


def config(tmp_path, **sections):
    values = {
        "run_dir": str(tmp_path),
        "train": {"steps": 6, "progress": False, "clip_grad_norm": None},
        "diagnostics": {"every": 1},
        "checkpoint": {"resume": False},
    }
    for key, value in sections.items():
        values.setdefault(key, {}).update(value)
    return from_dict(TrainerConfig, values)


def test_layer_grad_norms_match_torch():
    model = SigmoidMLP()
    batch = next(iter([toy_data().next_batch()]))
    classification_objective(model, batch)[0].backward()
    norms = diag.layer_grad_norms(model)
    first = model.net[0]
    expected = math.sqrt(float(first.weight.grad.pow(2).sum() + first.bias.grad.pow(2).sum()))
    assert math.isclose(norms["net.0"], expected, rel_tol=1e-5)
    assert len(norms) == DEPTH + 1


def test_vanishing_flagged_for_deep_sigmoid_mlp(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(SigmoidMLP(), classification_objective, toy_data(), config(tmp_path))
    trainer.fit()
    vanishing = [w for w in trainer.warnings if "vanishing" in w]
    assert vanishing, trainer.warnings
    assert "net.0" in vanishing[0]  # names the starved early layer


def test_residual_layernorm_relu_mlp_not_flagged(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ResidualMLP(), classification_objective, toy_data(), config(tmp_path))
    trainer.fit()
    assert not [w for w in trainer.warnings if "vanishing" in w], trainer.warnings
    norms = diag.layer_grad_norms(trainer.model)
    assert norms["blocks.0.linear"] > 1e-2 * norms["head"]


def test_exploding_flagged_with_large_init_until_clipping(tmp_path):
    torch.manual_seed(0)
    large = {"init": "normal", "init_std": 1.0}
    sgd = {"name": "sgd", "lr": 1e-3, "schedule": "constant"}
    unclipped = Trainer(
        ReLUMLP(),
        classification_objective,
        toy_data(),
        config(tmp_path / "a", train=large, optim=sgd),
    )
    unclipped.fit()
    assert any("exploding" in w for w in unclipped.warnings), unclipped.warnings
    clipped = Trainer(
        ReLUMLP(),
        classification_objective,
        toy_data(),
        config(tmp_path / "b", train={**large, "clip_grad_norm": 1.0}, optim=sgd),
    )
    clipped.fit()
    assert not any("exploding" in w for w in clipped.warnings), clipped.warnings
    assert all(r["grad_norm"] > 100 for r in clipped.history)  # raw norms are still logged as huge


def test_saturation_stats_and_update_ratios():
    model = SigmoidMLP()
    with torch.no_grad():
        model.net[0].weight.mul_(50)  # push the first sigmoid's inputs into the flat region
    with diag.SaturationMonitor(model) as monitor:
        model(torch.randn(64, WIDTH))
    stats = monitor.stats()
    assert stats["net.1"] > 0.8 and stats["net.3"] < 0.2
    assert "net.1" in diag.saturation_warning(stats)
    before = diag.snapshot_weights(model)
    with torch.no_grad():
        model.net[0].weight.mul_(1.01)
    ratios = diag.update_weight_ratios(model, before)
    assert math.isclose(ratios["net.0"], 0.01, rel_tol=0.05) and ratios["net.2"] == 0


def test_nan_guard_skips_step_and_loss_spike_detected(tmp_path):
    calls = {"n": 0}

    def objective(model, batch):
        calls["n"] += 1
        loss, metrics = classification_objective(model, batch)
        if calls["n"] == 3:
            loss = loss * float("nan")
        if calls["n"] == 8:  # after finite losses at steps 1, 2, 4-7 filled the window
            loss = loss * 100
        return loss, metrics

    torch.manual_seed(0)
    model = ResidualMLP()
    trainer = Trainer(
        model,
        objective,
        toy_data(),
        config(tmp_path, train={"steps": 8}, diagnostics={"window": 5}),
    )
    weights = []
    trainer.callbacks.append(lambda t, r: weights.append(model.head.weight.detach().clone()))
    trainer.fit()
    assert trainer.history[2].get("skipped") and any("non-finite" in w for w in trainer.warnings)
    assert torch.equal(weights[1], weights[2])  # the NaN step changed nothing
    assert all(torch.isfinite(w).all() for w in weights)
    spikes = [w for w in trainer.warnings if "loss spike" in w]
    assert len(spikes) == 1 and "step 8" in spikes[0], trainer.warnings  # the trainer caught it
    detector = diag.LossSpikeDetector(factor=1.5, window=5)
    assert [detector.check(v) for v in [2.0, 2.1, 1.9, 2.0, 2.0, 9.0]][-1].startswith("loss spike")
