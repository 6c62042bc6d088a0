"""vanishing-gradients: per-layer gradient norms of a 20-layer MLP, and what fixes them.

    llmlab exp run vanishing-gradients [--fast]

Seven variants of the same 20-hidden-layer MLP on a teacher-labelled classification task: sigmoid,
tanh and ReLU; ReLU with Xavier vs He init; sigmoid with a residual connection, with LayerNorm and
with BatchNorm. We record the gradient norm of every hidden layer's weight at initialization and
after a short SGD run, and compare first-layer to last-layer norms.

Checks, stated before measuring (`CHECKS`; the verdict is their conjunction):

- plain sigmoid: first-layer / last-layer gradient norm at init < 1e-2 (vanished)
- tanh's ratio is above sigmoid's
- ReLU + He init: ratio ≥ 100× sigmoid's
- ReLU: He init's typical (geometric-mean) layer gradient > 10× Xavier's
- sigmoid + residual connection: ratio ≥ 100× plain sigmoid's
- sigmoid + LayerNorm: ratio not vanished (≥ 1e-2, the same line as plain sigmoid's)
- sigmoid + BatchNorm: ratio not vanished (≥ 1e-2)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.exp.blocks import init
from llmlab.exp.blocks.norms import BatchNorm, LayerNorm
from llmlab.exp.common import (
    Check,
    Claim,
    Outcome,
    fmt,
    layer_grad_norms,
    new_figure,
    teacher_classification,
)

# first-layer / last-layer gradient norm below this = vanished (one line for every variant)
VANISHED = 1e-2

NAME = "vanishing-gradients"
TITLE = "gradient norm by layer in a 20-layer MLP"
CLAIM = Claim(
    section="梯度消失和梯度爆炸的原因是什么 / 解决梯度消失和梯度爆炸的方法",
    zh="在反向传播时，梯度是各层导数的连乘。如果激活函数（如sigmoid或tanh）的导数小于1，连续相乘后梯度迅速趋近0，"
    "导致前面层几乎不更新。……对于ReLU：使用He初始化；对于sigmoid或tanh：使用Xavier初始化；"
    "使用残差连接、Batch Normalization、LayerNorm 缓解梯度消失。",
    en="In backprop the gradient is a product of per-layer derivatives; if the activation's derivative "
    "is below 1 (sigmoid, tanh) the product quickly goes to 0 and early layers barely update. "
    "Remedies: He init for ReLU, Xavier for sigmoid/tanh, residual connections, BatchNorm, LayerNorm.",
)
# The checks, stated before measuring (docs/lab.md and report.md list them before the results).
CHECKS = (
    "plain sigmoid: first-layer / last-layer gradient norm at init < 1e-2 (vanished)",
    "tanh's ratio is above sigmoid's",
    "ReLU + He init: ratio ≥ 100× sigmoid's",
    "ReLU: He init's typical (geometric-mean) layer gradient > 10× Xavier's",
    "sigmoid + residual connection: ratio ≥ 100× plain sigmoid's",
    "sigmoid + LayerNorm: ratio not vanished (≥ 1e-2, the same line as plain sigmoid's)",
    "sigmoid + BatchNorm: ratio not vanished (≥ 1e-2)",
)
# What did not hold in an earlier design, with its numbers, and what changed (docs/lab.md).
HISTORY = """Earlier design: the remedies were judged against plain sigmoid ("≥ 10× plain"), so LayerNorm
passed with a first/last ratio of 1.99e-08 — a ratio the experiment's own line (< 1e-2) calls
vanished. Now every variant is judged by that one line, and the LayerNorm check does not hold with
the same measurement: normalising across one sample's features leaves sigmoid's per-layer
derivative (≤ 0.25) in the chain, where BatchNorm (1.76) rescales the backward signal per feature."""

VARIANTS = {  # name: (activation, init, residual, norm)
    "sigmoid": ("sigmoid", "xavier", False, None),
    "tanh": ("tanh", "xavier", False, None),
    "relu+he": ("relu", "he", False, None),
    "relu+xavier": ("relu", "xavier", False, None),
    "sigmoid+residual": ("sigmoid", "xavier", True, None),
    "sigmoid+layernorm": ("sigmoid", "xavier", False, "layer"),
    "sigmoid+batchnorm": ("sigmoid", "xavier", False, "batch"),
}
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class DeepMLP(nn.Module):
    def __init__(self, dim, width, depth, classes, activation, init_name, residual, norm):
        super().__init__()
        self.inp, self.out = nn.Linear(dim, width), nn.Linear(width, classes)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        make_norm = {"layer": LayerNorm, "batch": BatchNorm}.get(norm)
        self.norms = nn.ModuleList(make_norm(width) for _ in range(depth)) if make_norm else None
        self.act, self.residual = ACTIVATIONS[activation], residual
        for layer in [self.inp, *self.hidden, self.out]:
            (init.he_normal_ if init_name == "he" else init.xavier_normal_)(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = self.act(self.inp(x))
        for i, layer in enumerate(self.hidden):
            h = layer(x)
            h = self.act(self.norms[i](h) if self.norms is not None else h)
            x = x + h if self.residual else h
        return self.out(x)


def run(fast: bool) -> Outcome:
    width, depth, steps, n = (16, 20, 30, 512) if fast else (64, 20, 300, 4096)
    x, y = teacher_classification(n, 16, 4, seed=1)
    loss_fn = nn.CrossEntropyLoss()
    at_init, after, losses = {}, {}, {}
    for name, spec in VARIANTS.items():
        torch.manual_seed(0)
        model = DeepMLP(16, width, depth, 4, *spec)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(2)
        curve = []
        for step in range(steps + 1):
            idx = torch.randint(0, n, (128,), generator=g)
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            if step == 0:
                at_init[name] = layer_grad_norms(list(model.hidden))
            if step == steps:
                after[name] = layer_grad_norms(list(model.hidden))
                break
            opt.step()
            curve.append(loss.item())
        losses[name] = curve

    ratio = {k: v[0] / v[-1] for k, v in at_init.items()}  # first hidden layer / last hidden layer
    s = ratio["sigmoid"]
    typical = {k: math.exp(sum(math.log(g) for g in v) / len(v)) for k, v in at_init.items()}
    checks = [
        Check(
            f"sigmoid: first-layer gradient is {fmt(s)}× the last layer's at init "
            f"(vanished: < {VANISHED})",
            s < VANISHED,
        ),
        Check(
            f"tanh (derivative ≤ 1) keeps more than sigmoid (≤ 0.25): ratio {fmt(ratio['tanh'])} vs {fmt(s)}",
            ratio["tanh"] > s,
        ),
        Check(
            f"ReLU + He keeps the gradient flowing: ratio {fmt(ratio['relu+he'])} (≥ 100× sigmoid's)",
            ratio["relu+he"] >= 100 * s,
        ),
        Check(
            f"He beats Xavier for ReLU: typical (geometric-mean) layer gradient {fmt(typical['relu+he'])} "
            f"vs {fmt(typical['relu+xavier'])} — Xavier halves the signal's variance at every ReLU layer",
            typical["relu+he"] > 10 * typical["relu+xavier"],
        ),
        Check(
            f"a residual connection fixes sigmoid: ratio {fmt(ratio['sigmoid+residual'])} (≥ 100× plain)",
            ratio["sigmoid+residual"] >= 100 * s,
        ),
        # The remedies are judged by the same line that called plain sigmoid's gradient vanished:
        # "10× better than vanished" can still be vanished (LayerNorm measured 1.99e-08).
        Check(
            f"LayerNorm keeps sigmoid's gradient from vanishing: ratio "
            f"{fmt(ratio['sigmoid+layernorm'])} (not vanished: ≥ {VANISHED})",
            ratio["sigmoid+layernorm"] >= VANISHED,
        ),
        Check(
            f"BatchNorm keeps sigmoid's gradient from vanishing: ratio "
            f"{fmt(ratio['sigmoid+batchnorm'])} (not vanished: ≥ {VANISHED})",
            ratio["sigmoid+batchnorm"] >= VANISHED,
        ),
    ]
    final = {k: sum(v[-10:]) / len(v[-10:]) for k, v in losses.items()}
    discussion = (
        "Gradient norm of each hidden layer's weight, layer 1 = closest to the input. "
        f"Mean training loss over the last 10 of {steps} SGD steps: "
        + ", ".join(f"{k} {fmt(v)}" for k, v in final.items())
        + ". Plain sigmoid's per-layer factor is at most σ' = 0.25 times the weight gain, so 20 layers "
        "multiply to a vanishing number. BatchNorm removes each feature's offset (sigmoid outputs sit "
        "around 0.5, so W·h carries a large per-feature constant) and rescales the remaining variation to "
        "unit variance, which also rescales the backward signal; LayerNorm normalizes across features of "
        f"one sample, where those per-feature offsets dominate, so it helps far less (ratio "
        f"{fmt(ratio['sigmoid+layernorm'])} vs BatchNorm's {fmt(ratio['sigmoid+batchnorm'])}). "
        "With Xavier init a ReLU net's first/last ratio looks healthy only because every layer's "
        "gradient is uniformly small; the geometric mean shows it."
    )

    fig, axes = new_figure(3, width=4.6)
    for name in VARIANTS:
        layers = range(1, depth + 1)
        axes[0].semilogy(layers, at_init[name], marker=".", label=name)
        axes[1].semilogy(layers, after[name], marker=".", label=name)
        axes[2].plot(losses[name], label=name)
    axes[0].set(title="gradient norm at init", xlabel="layer", ylabel="‖∂L/∂W‖")
    axes[1].set(title=f"after {steps} SGD steps", xlabel="layer")
    axes[2].set(title="training loss", xlabel="step", yscale="log")
    axes[0].legend(fontsize=7)
    numbers = {
        "grad_norm_at_init": at_init,
        "grad_norm_after_training": after,
        "first_over_last_at_init": ratio,
        "final_train_loss": final,
    }
    return Outcome(numbers, checks, fig, discussion)
