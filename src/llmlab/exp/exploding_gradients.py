"""exploding-gradients: a long tanh RNN with large recurrent weights, with and without clipping.

    llmlab exp run exploding-gradients [--fast]

Part 1: gradient norm at initialization against sequence length for recurrent weights W_hh =
gain · (random orthogonal), gains 0.5, 1 and 2. Part 2: train the gain-2 RNN on a regression task
with plain SGD, with clipping by global norm (torch.nn.utils.clip_grad_norm_) and by value
(clip_grad_value_), and compare loss curves and gradient norms.

Checks, stated before measuring (`CHECKS`; the verdict is their conjunction):

- with recurrent gain 2 the gradient norm grows ≥ 100× from length 5 to 100, with gain 0.5 < 10×
- without clipping the final loss is higher than with clipping by norm, and the largest loss >
  10× the clipped run's
- clipping by value also ends with a lower loss than no clipping
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.exp.blocks.recurrent import RNN
from llmlab.exp.common import Check, Claim, Outcome, fmt, new_figure

NAME = "exploding-gradients"
TITLE = "long RNN with large init: gradient norm, and clipping"
CLAIM = Claim(
    section="梯度消失和梯度爆炸的原因是什么 / 解决梯度消失和梯度爆炸的方法",
    zh="如果激活函数的导数或权重大于1，连乘后梯度指数级增大，导致模型权重更新剧烈，甚至数值溢出。……"
    "梯度裁剪（Gradient Clipping）主要用于RNN、LSTM，在梯度过大时将其限制在某一范围内（如[-5, 5]）。",
    en="If derivatives or weights exceed 1, the product grows exponentially, weight updates become violent "
    "and can overflow. Gradient clipping, used mainly for RNNs/LSTMs, limits gradients to a range "
    "(e.g. [-5, 5]) when they get too large.",
)
# The checks, stated before measuring (docs/lab.md and report.md list them before the results).
CHECKS = (
    "with recurrent gain 2 the gradient norm grows ≥ 100× from length 5 to 100, with gain 0.5 < 10×",
    "without clipping the final loss is higher than with clipping by norm, and the largest loss > 10× the clipped run's",
    "clipping by value also ends with a lower loss than no clipping",
)

GAINS = (0.5, 1.0, 2.0)


def make_rnn(gain: float, hidden: int) -> tuple[RNN, nn.Linear]:
    torch.manual_seed(0)
    rnn, head = RNN(4, hidden), nn.Linear(hidden, 1)
    with torch.no_grad():
        nn.init.orthogonal_(rnn.cells[0].weight_hh)
        rnn.cells[0].weight_hh.mul_(gain)  # all singular values = gain
    return rnn, head


def batch(generator: torch.Generator, length: int, size: int = 32):
    x = torch.randn(size, length, 4, generator=generator)
    # The target depends on the last two steps only: easy to learn, so instability is the optimizer's.
    return x, (x[:, -1, 0] + x[:, -2, 1]).unsqueeze(1)


def loss_of(rnn, head, x, y):
    out, _ = rnn(x)
    return ((head(out[:, -1]) - y) ** 2).mean()


def grad_norm(params) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))


def run(fast: bool) -> Outcome:
    hidden = 32
    lengths = (5, 20, 40) if fast else (5, 10, 25, 50, 100)
    train_length, steps = (30, 80) if fast else (50, 300)

    init_norms = {}
    for gain in GAINS:
        init_norms[str(gain)] = []
        for length in lengths:
            rnn, head = make_rnn(gain, hidden)
            loss_of(rnn, head, *batch(torch.Generator().manual_seed(1), length)).backward()
            init_norms[str(gain)].append(grad_norm(rnn.parameters()))

    clipping = {
        "none": None,
        "clip by norm (1.0)": ("norm", 1.0),
        "clip by value (0.05)": ("value", 0.05),
    }
    curves, norms, nonfinite = {}, {}, {}
    for name, clip in clipping.items():
        rnn, head = make_rnn(2.0, hidden)
        params = [*rnn.parameters(), *head.parameters()]
        opt = torch.optim.SGD(params, lr=0.1)
        g = torch.Generator().manual_seed(2)
        curves[name], norms[name], nonfinite[name] = [], [], 0
        for _ in range(steps):
            loss = loss_of(rnn, head, *batch(g, train_length))
            opt.zero_grad()
            loss.backward()
            norms[name].append(grad_norm(params))
            if clip and clip[0] == "norm":
                nn.utils.clip_grad_norm_(params, clip[1])
            elif clip:
                nn.utils.clip_grad_value_(params, clip[1])
            opt.step()
            value = loss.item()
            nonfinite[name] += not math.isfinite(value)
            curves[name].append(value)
    tail = max(1, steps // 10)
    final = {
        k: (sum(v[-tail:]) / tail if all(math.isfinite(x) for x in v[-tail:]) else float("inf"))
        for k, v in curves.items()
    }

    big, small = init_norms["2.0"], init_norms["0.5"]
    growth_big, growth_small = big[-1] / big[0], small[-1] / small[0]
    checks = [
        Check(
            f"gain 2: gradient norm grows {fmt(growth_big)}× from length {lengths[0]} to {lengths[-1]} "
            f"(exponential: ≥ 100×), gain 0.5 only {fmt(growth_small)}×",
            growth_big >= 100 and growth_small < 10,
        ),
        Check(
            f"without clipping training is unstable: loss spikes to {fmt(max(curves['none']))} (clipped by norm: "
            f"{fmt(max(curves['clip by norm (1.0)']))}), final loss {fmt(final['none'])} vs "
            f"{fmt(final['clip by norm (1.0)'])}; max grad norm seen {fmt(max(norms['none']))}",
            final["none"] > final["clip by norm (1.0)"]
            and max(curves["none"]) > 10 * max(curves["clip by norm (1.0)"]),
        ),
        Check(
            f"clipping by value also stabilizes: final loss {fmt(final['clip by value (0.05)'])} < "
            f"{fmt(final['none'])}",
            final["clip by value (0.05)"] < final["none"],
        ),
    ]
    discussion = (
        f"Regression on a length-{train_length} sequence, SGD lr 0.1, {steps} steps, W_hh = 2 × orthogonal. "
        f"Non-finite losses: {nonfinite}. Mean loss over the last {tail} steps: "
        + ", ".join(f"{k} {fmt(v)}" for k, v in final.items())
        + ". Clipping by norm keeps the gradient's direction and caps its length; clipping by value caps "
        "each coordinate, which also changes the direction. Neither removes the cause (the recurrent "
        "Jacobian's singular values > 1); they only bound the step."
    )

    fig, axes = new_figure(3, width=4.6)
    for gain in GAINS:
        axes[0].semilogy(lengths, init_norms[str(gain)], marker="o", label=f"gain {gain}")
    axes[0].set(title="gradient norm at init", xlabel="sequence length", ylabel="‖∇‖")
    axes[0].legend()
    for name in clipping:
        axes[1].semilogy([min(v, 1e6) for v in curves[name]], label=name)
        axes[2].semilogy(norms[name], label=name)
    axes[1].set(title="training loss (gain 2)", xlabel="step")
    axes[2].set(title="gradient norm before clipping", xlabel="step")
    axes[1].legend(fontsize=7)
    numbers = {
        "max_loss": {k: max(v) for k, v in curves.items()},
        "lengths": list(lengths),
        "grad_norm_at_init_by_gain": init_norms,
        "final_loss": final,
        "nonfinite_losses": nonfinite,
        "max_grad_norm": {k: max(v) for k, v in norms.items()},
    }
    return Outcome(numbers, checks, fig, discussion)
