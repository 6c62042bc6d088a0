"""dropout: the overfitting gap against the drop rate, and the inference-time scaling rule.

    llmlab exp run dropout [--fast]

An over-parameterized MLP (2 × 256 hidden units, inverted dropout after each ReLU) on a small noisy
training set, trained with drop rates 0 … 0.5; the gap is validation loss − training loss (both
measured in eval mode). Then the expectation check: the notes' formula (train x·m with
m ~ Bernoulli(p), p = keep probability; inference x·p) against inverted dropout (train x·m/p;
inference x), and what happens if the notes' inference rule is applied to a framework's
(inverted) dropout layer.

Checks, stated before measuring (`CHECKS`; the verdict is their conjunction):

- the overfitting gap (val − train loss) at the largest p_drop is below p_drop 0's
- some p_drop > 0 reaches a lower validation loss than no dropout
- the notes' formula (scale by p at inference) keeps the expectation: relative error < 1%
- inverted dropout needs no inference scaling: relative error < 1%
- the notes' inference scaling applied to inverted dropout keeps the expectation: relative error
  < 1%
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.exp.blocks.dropout import InvertedDropout, ScaleAtInferenceDropout
from llmlab.exp.common import Check, Claim, Outcome, fmt, new_figure, teacher_classification

NAME = "dropout"
TITLE = "dropout shrinks the overfitting gap; where the test-time scaling goes"
CLAIM = Claim(
    section="dropout的作用是什么",
    zh="Dropout 是一种正则化方法，主要作用是防止过拟合。训练时：x̃ = x·m，m ∼ Bernoulli(p)，p为保留概率；"
    "推理时：不丢节点，输出乘以 p 的缩放补偿（保持期望一致）。",
    en="Dropout is a regularizer whose main effect is preventing overfitting. Training: x̃ = x·m with "
    "m ~ Bernoulli(p), p the keep probability; inference: drop nothing and multiply outputs by p to keep "
    "the expectation the same.",
)
# The checks, stated before measuring (docs/lab.md and report.md list them before the results).
CHECKS = (
    "the overfitting gap (val − train loss) at the largest p_drop is below p_drop 0's",
    "some p_drop > 0 reaches a lower validation loss than no dropout",
    "the notes' formula (scale by p at inference) keeps the expectation: relative error < 1%",
    "inverted dropout needs no inference scaling: relative error < 1%",
    "the notes' inference scaling applied to inverted dropout keeps the expectation: relative error < 1%",
)
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def train(p_drop: float, steps: int, train_set, val_set) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 256),
        nn.ReLU(),
        InvertedDropout(p_drop),
        nn.Linear(256, 256),
        nn.ReLU(),
        InvertedDropout(p_drop),
        nn.Linear(256, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    val_curve = []
    for step in range(steps):
        model.train()
        loss = nn.functional.cross_entropy(model(train_set[0]), train_set[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 or step == steps - 1:
            with torch.no_grad():
                val_curve.append(
                    nn.functional.cross_entropy(model.eval()(val_set[0]), val_set[1]).item()
                )
    with torch.no_grad():
        model.eval()
        train_loss = nn.functional.cross_entropy(model(train_set[0]), train_set[1]).item()
    return {
        "train_loss": train_loss,
        "val_loss": val_curve[-1],
        "gap": val_curve[-1] - train_loss,
        "best_val_loss": min(val_curve),
        "val_curve": val_curve,
    }


def expectation_check(keep: float, samples: int) -> dict:
    """Mean output over many dropout masks vs the inference-time output, for a constant input 1."""
    x = torch.ones(samples)
    inverted, notes = InvertedDropout(1 - keep), ScaleAtInferenceDropout(keep)
    train_inverted, train_notes = inverted.train()(x).mean().item(), notes.train()(x).mean().item()
    infer_inverted, infer_notes = inverted.eval()(x).mean().item(), notes.eval()(x).mean().item()
    mixed = (
        infer_inverted * keep
    )  # the notes' rule applied on top of a framework's (inverted) dropout
    return {
        "keep": keep,
        "inverted_train_mean": train_inverted,
        "inverted_inference": infer_inverted,
        "notes_train_mean": train_notes,
        "notes_inference": infer_notes,
        "inverted_train_then_multiply_by_p": mixed,
        "notes_rel_error": abs(infer_notes - train_notes) / train_notes,
        "inverted_rel_error": abs(infer_inverted - train_inverted) / train_inverted,
        "mixed_rel_error": abs(mixed - train_inverted) / train_inverted,
    }


def run(fast: bool) -> Outcome:
    steps, n_train = (60, 64) if fast else (200, 128)
    x, y = teacher_classification(n_train + 1024, 16, 4, seed=6, noise=1.0)
    train_set, val_set = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    results = {str(p): train(p, steps, train_set, val_set) for p in RATES}
    gaps = [results[str(p)]["gap"] for p in RATES]
    expectation = expectation_check(keep=0.8, samples=20_000 if fast else 1_000_000)

    checks = [
        Check(
            f"dropout shrinks the overfitting gap (val − train loss): {fmt(gaps[0])} at p_drop 0 → "
            f"{fmt(gaps[-1])} at p_drop 0.5",
            gaps[-1] < gaps[0],
        ),
        Check(
            f"dropout improves validation loss: best over p_drop > 0 "
            f"{fmt(min(results[str(p)]['val_loss'] for p in RATES[1:]))} vs {fmt(results['0.0']['val_loss'])} without",
            min(results[str(p)]["val_loss"] for p in RATES[1:]) < results["0.0"]["val_loss"],
        ),
        Check(
            f"the notes' formula keeps the expectation (train mean {fmt(expectation['notes_train_mean'])}, "
            f"inference {fmt(expectation['notes_inference'])}, keep p = 0.8)",
            expectation["notes_rel_error"] < 0.01,
        ),
        Check(
            f"inverted dropout (torch.nn.Dropout, llmlab) needs no inference scaling: train mean "
            f"{fmt(expectation['inverted_train_mean'])}, inference {fmt(expectation['inverted_inference'])}",
            expectation["inverted_rel_error"] < 0.01,
        ),
        Check(
            f'the notes\' "multiply by p at inference" applied to inverted dropout keeps the expectation: '
            f"gives {fmt(expectation['inverted_train_then_multiply_by_p'])} for a training mean of "
            f"{fmt(expectation['inverted_train_mean'])} (off by {fmt(100 * expectation['mixed_rel_error'])}%)",
            expectation["mixed_rel_error"] < 0.01,
        ),
    ]
    discussion = (
        "The notes describe the original (2014) dropout: no scaling while training, multiply by the keep "
        "probability p at inference. Every modern framework implements *inverted* dropout instead: "
        "survivors are divided by p during training, and inference does nothing. Both keep the expected "
        "activation equal, so the notes' formula is right for the layer it describes — but it does not hold "
        "for the dropout you actually use: multiplying by p at inference after training with "
        "torch.nn.Dropout shrinks every activation by p (the last check). Gap and loss per drop rate: "
        + "; ".join(
            f"p_drop {p}: train {fmt(results[str(p)]['train_loss'])}, val {fmt(results[str(p)]['val_loss'])}"
            for p in RATES
        )
        + f". {n_train} noisy training samples, {steps} full-batch Adam steps."
    )
    fig, axes = new_figure(2, width=5)
    axes[0].plot(
        RATES, [results[str(p)]["train_loss"] for p in RATES], marker="o", label="train loss"
    )
    axes[0].plot(
        RATES, [results[str(p)]["val_loss"] for p in RATES], marker="o", label="validation loss"
    )
    axes[0].plot(RATES, gaps, marker="o", label="gap")
    axes[0].set(title="final losses vs drop rate", xlabel="p_drop")
    axes[0].legend()
    for p in RATES:
        curve = results[str(p)]["val_curve"]
        axes[1].plot([10 * (i + 1) for i in range(len(curve))], curve, label=f"p_drop {p}")
    axes[1].set(title="validation loss during training", xlabel="step")
    axes[1].legend(fontsize=7)
    numbers = {"rates": list(RATES), "results": results, "gaps": gaps, "expectation": expectation}
    return Outcome(numbers, checks, fig, discussion)
