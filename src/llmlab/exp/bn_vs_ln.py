"""bn-vs-ln: accuracy and stability against batch size for BatchNorm vs LayerNorm MLPs.

    llmlab exp run bn-vs-ln [--fast]

The same 3-hidden-layer MLP (Linear → norm → ReLU) trained for the same number of epochs at batch
sizes 2 … 256, once with BatchNorm and once with LayerNorm. Test accuracy is measured in eval mode
(BatchNorm then uses its running statistics). Train/eval gap: the training loss measured in eval
mode (BatchNorm: running statistics) minus the loss seen in train mode (batch statistics).

Checks, stated before measuring (`CHECKS`; the verdict is their conjunction):

- BatchNorm's eval accuracy at batch 2 is ≥ 0.05 below its best batch size
- LayerNorm's accuracy spread over batch sizes is smaller than BatchNorm's
- switching to eval mode changes BatchNorm's training loss by > 1e-3 and LayerNorm's by < 1e-6
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from llmlab.exp.blocks.norms import BatchNorm, LayerNorm
from llmlab.exp.common import (
    Check,
    Claim,
    Outcome,
    accuracy,
    batches,
    fmt,
    new_figure,
    teacher_classification,
)

NAME = "bn-vs-ln"
TITLE = "batch-size dependence of BatchNorm vs LayerNorm"
CLAIM = Claim(
    section="BatchNorm和LayerNorm有什么区别",
    zh="BatchNorm 对 batch 维度归一化，依赖多个样本，适合 CNN，但对小 batch 敏感；LayerNorm 对单个样本特征归一化，"
    "不依赖 batch size，更适合 RNN 和 Transformer 等序列模型。（BN 推理阶段需要保存 moving mean/var，LN 不需要额外统计。）",
    en="BatchNorm normalizes over the batch dimension and depends on several samples (good for CNNs, "
    "sensitive to small batches); LayerNorm normalizes each sample's features and does not depend on "
    "batch size. BN must keep moving mean/var for inference; LN needs no extra statistics.",
)
# The checks, stated before measuring (docs/lab.md and report.md list them before the results).
CHECKS = (
    "BatchNorm's eval accuracy at batch 2 is ≥ 0.05 below its best batch size",
    "LayerNorm's accuracy spread over batch sizes is smaller than BatchNorm's",
    "switching to eval mode changes BatchNorm's training loss by > 1e-3 and LayerNorm's by < 1e-6",
)


def mlp(norm: str, width: int = 64) -> nn.Sequential:
    make = BatchNorm if norm == "batch" else LayerNorm
    layers, size = [], 16
    for _ in range(3):
        layers += [nn.Linear(size, width), make(width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(width, 4))


def train_and_eval(norm: str, batch_size: int, epochs: int, train, test) -> dict:
    torch.manual_seed(0)
    model = mlp(norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(epochs):
        for idx in batches(len(train[0]), batch_size, g):
            loss = nn.functional.cross_entropy(model(train[0][idx]), train[1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    tail = losses[-max(10, len(losses) // 5) :]
    with torch.no_grad():
        model.eval()
        eval_acc = accuracy(model(test[0]), test[1])
        eval_mode_train_loss = nn.functional.cross_entropy(model(train[0]), train[1]).item()
        # Same weights, batch statistics: train mode over the training set in batches of the training
        # size (BatchNorm's running buffers are restored afterwards).
        model.train()
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        n = len(train[0]) // batch_size * batch_size
        logits = torch.cat([model(train[0][i : i + batch_size]) for i in range(0, n, batch_size)])
        train_mode_loss = nn.functional.cross_entropy(logits, train[1][:n]).item()
        model.load_state_dict(saved)
    return {
        "eval_accuracy": eval_acc,
        "train_loss_train_mode": train_mode_loss,
        "train_loss_eval_mode": eval_mode_train_loss,
        "train_eval_gap": eval_mode_train_loss - train_mode_loss,
        "loss_std_last_fifth": statistics.pstdev(tail),
    }


def run(fast: bool) -> Outcome:
    sizes = (2, 8, 64) if fast else (2, 4, 8, 16, 32, 64, 128, 256)
    n_train, epochs = (256, 2) if fast else (1024, 4)
    x, y = teacher_classification(n_train + 1024, 16, 4, seed=5)
    train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    results = {
        norm: {str(b): train_and_eval(norm, b, epochs, train, test) for b in sizes}
        for norm in ("batch", "layer")
    }

    acc = {norm: [results[norm][str(b)]["eval_accuracy"] for b in sizes] for norm in results}
    spread = {norm: max(a) - min(a) for norm, a in acc.items()}
    gap = {norm: [results[norm][str(b)]["train_eval_gap"] for b in sizes] for norm in results}
    small = str(sizes[0])
    checks = [
        Check(
            f"BatchNorm is hurt by small batches: eval accuracy {fmt(acc['batch'][0])} at batch {small} vs best "
            f"{fmt(max(acc['batch']))}",
            max(acc["batch"]) - acc["batch"][0] >= 0.05,
        ),
        Check(
            f"LayerNorm depends less on batch size: accuracy spread {fmt(spread['layer'])} vs BatchNorm's "
            f"{fmt(spread['batch'])}",
            spread["layer"] < spread["batch"],
        ),
        Check(
            f"BatchNorm needs its running statistics, LayerNorm needs none: largest |training loss in eval mode − "
            f"in train mode| {fmt(max(map(abs, gap['batch'])))} for BatchNorm vs {fmt(max(map(abs, gap['layer'])))} "
            f"for LayerNorm",
            max(map(abs, gap["layer"])) < 1e-6 < 1e-3 < max(map(abs, gap["batch"])),
        ),
    ]
    discussion = (
        f"{n_train} training samples, {epochs} epochs at every batch size (so small batches take more steps), "
        "SGD lr 0.02 momentum 0.9. Eval-mode accuracy on 1024 held-out samples: "
        + "; ".join(
            f"{norm}: " + ", ".join(f"{b}→{fmt(a)}" for b, a in zip(sizes, acc[norm]))
            for norm in acc
        )
        + ". With 2 samples per batch each feature is normalized to ±1 during training, so the network "
        "learns on very different inputs than the running averages give it at inference; at large batches "
        "with few steps the running averages lag behind the weights, which is the other source of BatchNorm's "
        "train/eval gap."
    )
    fig, axes = new_figure(3, width=4.6)
    for norm, label in (("batch", "BatchNorm"), ("layer", "LayerNorm")):
        axes[0].semilogx(sizes, acc[norm], marker="o", base=2, label=label)
        axes[1].semilogx(
            sizes,
            [results[norm][str(b)]["loss_std_last_fifth"] for b in sizes],
            marker="o",
            base=2,
            label=label,
        )
        axes[2].semilogx(sizes, gap[norm], marker="o", base=2, label=label)
    axes[0].set(title="test accuracy (eval mode)", xlabel="batch size")
    axes[1].set(title="loss std (last fifth of training)", xlabel="batch size")
    axes[2].set(title="train loss: eval mode − train mode", xlabel="batch size")
    axes[0].legend()
    return Outcome(
        {
            "batch_sizes": list(sizes),
            "results": results,
            "accuracy_spread": spread,
            "train_eval_gap": gap,
        },
        checks,
        fig,
        discussion,
    )
