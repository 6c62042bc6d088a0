"""attention: why QKᵀ is divided by √d_k, and what separate heads learn on a toy task.

    llmlab exp run attention [--fast]

Part 1: random queries/keys with unit-variance entries; the logits q·k have standard deviation
√d_k, so without the scale the softmax collapses onto one key as d_k grows (max weight → 1) and its
gradient vanishes. Part 2: a one-layer, two-head causal attention model learns
y_t = (x_{t−1} + x_0) mod K, which needs two different look-ups; we measure where each head looks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.exp.common import Check, Claim, Outcome, fmt, new_figure
from llmlab.models.seq2seq import MultiHeadAttention, causal_mask

NAME = "attention"
TITLE = "scaled vs unscaled dot-product attention; what heads attend to"
CLAIM = Claim(
    section="Transformer",
    zh="Attention(Q, K, V) = softmax(QKᵀ / √d_k) · V。……多头机制：将注意力机制并行分成多个子空间（多个头），"
       "增强模型捕捉多粒度特征的能力，最后拼接融合。",
    en="Attention(Q, K, V) = softmax(QKᵀ/√d_k)·V. Multi-head: split attention into several subspaces (heads) "
       "in parallel, strengthening the model's ability to capture features at several granularities, then "
       "concatenate and fuse.",
)
K = 8  # toy task vocabulary


def saturation(d_k: int, scaled: bool, keys: int = 16, samples: int = 256) -> tuple[float, float]:
    """(mean max attention weight, mean norm of the softmax's gradient w.r.t. its logits)."""
    g = torch.Generator().manual_seed(d_k)
    q, k = torch.randn(samples, 1, d_k, generator=g), torch.randn(samples, keys, d_k, generator=g)
    logits = (q @ k.transpose(-2, -1) * (1 / math.sqrt(d_k) if scaled else 1.0)).requires_grad_(True)
    w = logits.softmax(dim=-1)
    target = torch.randn(samples, 1, keys, generator=g)
    (grad,) = torch.autograd.grad((w * target).sum(), logits)
    return w.max(dim=-1).values.mean().item(), grad.norm(dim=-1).mean().item()


class TwoLookups(nn.Module):
    def __init__(self, heads: int, d_model: int = 64, length: int = 8):
        super().__init__()
        self.tok, self.pos = nn.Embedding(K, d_model), nn.Embedding(length, d_model)
        self.attn = MultiHeadAttention(d_model, heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, 256), nn.ReLU(), nn.Linear(256, K))

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        h = h + self.attn(h, h, h, causal_mask(x.shape[1]))
        return self.mlp(h)


def toy_batch(g, size=128, length=8):
    x = torch.randint(0, K, (size, length), generator=g)
    y = (x.roll(1, dims=1) + x[:, :1]) % K
    return x, y


def train_heads(heads: int, steps: int) -> tuple[float, list[dict]]:
    torch.manual_seed(0)
    model = TwoLookups(heads)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(11)
    for _ in range(steps):
        x, y = toy_batch(g)
        loss = nn.functional.cross_entropy(model(x)[:, 2:].reshape(-1, K), y[:, 2:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = toy_batch(torch.Generator().manual_seed(12), size=512)
    with torch.no_grad():
        acc = (model(x)[:, 2:].argmax(-1) == y[:, 2:]).float().mean().item()
    w = model.attn.last_weights[:, :, 2:]  # [B, heads, positions t ≥ 2, keys]
    t = torch.arange(2, x.shape[1])
    looks = [{"to_previous": w[:, h, t - 2, t - 1].mean().item(), "to_first": w[:, h, :, 0].mean().item()}
             for h in range(heads)]
    return acc, looks


def run(fast: bool) -> Outcome:
    dims = (4, 16, 64, 256) if fast else (4, 16, 64, 256, 1024)
    sat = {mode: [saturation(d, mode == "scaled") for d in dims] for mode in ("scaled", "unscaled")}
    steps = 150 if fast else 600
    acc2, looks2 = train_heads(2, steps)
    acc1, looks1 = train_heads(1, steps)

    prev_head = max(range(2), key=lambda h: looks2[h]["to_previous"])
    first_head = 1 - prev_head
    max_w = {m: [s[0] for s in v] for m, v in sat.items()}
    grads = {m: [s[1] for s in v] for m, v in sat.items()}
    checks = [
        Check(f"without the 1/√d_k scale the softmax saturates as d_k grows: mean max weight "
              f"{fmt(max_w['unscaled'][0])} at d_k={dims[0]} → {fmt(max_w['unscaled'][-1])} at d_k={dims[-1]}; scaled stays "
              f"{fmt(min(max_w['scaled']))}–{fmt(max(max_w['scaled']))}",
              max_w["unscaled"][-1] > 0.8 and max(max_w["scaled"]) - min(max_w["scaled"]) < 0.15),
        Check(f"…and its gradient vanishes: {fmt(grads['unscaled'][-1])} unscaled vs {fmt(grads['scaled'][-1])} scaled "
              f"at d_k={dims[-1]}", grads["unscaled"][-1] < grads["scaled"][-1] / 2),
        Check(f"two heads specialize, one per look-up: head {prev_head} puts {fmt(looks2[prev_head]['to_previous'])} "
              f"on the previous token and {fmt(looks2[prev_head]['to_first'])} on the first; head {first_head} "
              f"{fmt(looks2[first_head]['to_first'])} on the first and {fmt(looks2[first_head]['to_previous'])} on the "
              f"previous (specialized = ≥ 0.5 more on its own target; task accuracy {fmt(acc2)})",
              looks2[prev_head]["to_previous"] - looks2[prev_head]["to_first"] >= 0.5
              and looks2[first_head]["to_first"] - looks2[first_head]["to_previous"] >= 0.5 and acc2 > 0.9),
    ]
    discussion = (
        f"Toy task y_t = (x_(t−1) + x_0) mod {K} over length-8 sequences, scored on t ≥ 2, {steps} Adam steps. "
        f"One head, same width: accuracy {fmt(acc1)}, weight on previous {fmt(looks1[0]['to_previous'])}, on first "
        f"{fmt(looks1[0]['to_first'])} . A single softmax can split itself 50/50 between the two positions and the MLP still decodes both "
        "tokens from the average, so this task does not force heads apart; whether heads specialize is a "
        "property of the task and the training run, not a guarantee of multi-head attention. Part 1's gradient "
        "is the norm of ∂(w·r)/∂logits for a random r: the softmax Jacobian diag(w) − wwᵀ goes to 0 when w is one-hot."
    )
    fig, axes = new_figure(3, width=4.6)
    for mode in sat:
        axes[0].semilogx(dims, max_w[mode], marker="o", base=2, label=mode)
        axes[1].loglog(dims, grads[mode], marker="o", base=2, label=mode)
    axes[0].set(title="mean max attention weight", xlabel="d_k")
    axes[1].set(title="gradient through softmax", xlabel="d_k")
    axes[0].legend()
    x, _ = toy_batch(torch.Generator().manual_seed(12), size=1)
    bars = [[looks2[h]["to_previous"], looks2[h]["to_first"]] for h in range(2)] + [[looks1[0]["to_previous"], looks1[0]["to_first"]]]
    for i, (name, b) in enumerate(zip(["2 heads: head 0", "2 heads: head 1", "1 head"], bars)):
        axes[2].bar([i - 0.2, i + 0.2], b, width=0.4, color=["C0", "C1"])
    axes[2].set_xticks(range(3), ["2h: head 0", "2h: head 1", "1 head"])
    axes[2].set(title="attention on previous (blue) / first (orange)")
    return Outcome({"d_k": list(dims), "mean_max_weight": max_w, "softmax_grad": grads, "two_heads_accuracy": acc2,
                    "two_heads_looks": looks2, "one_head_accuracy": acc1, "one_head_looks": looks1}, checks, fig, discussion)
