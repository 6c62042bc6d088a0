"""Post-training losses as plain tensor functions: each one formula, tested against TRL on the same tensors.

    loss = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)
    loss = reward_loss(chosen_scores, rejected_scores, margin=None)        # Bradley–Terry
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)  # PPO
    advantages = grpo_advantages(rewards, group_size=8)                     # GRPO

Shapes: sequence-level inputs are [batch]; token-level ones are [batch, T] with a 0/1 `mask` that
marks the completion tokens the loss covers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries: advantages on a fixed scale whatever the rewards."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target_t | prefix) per position: logits [B, T, V], targets [B, T] → [B, T] (float32)."""
    logits = logits.float()
    picked = torch.gather(logits, -1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def summed_logps(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, num_rows: int
) -> torch.Tensor:
    """Σ log p(target) per row from the logits of selected positions only: logits [N, V], targets and
    rows (which row each position belongs to) [N] → [num_rows] (float32)."""
    picked = token_logps(logits, targets)
    return picked.new_zeros(num_rows).index_add(0, rows, picked)


# ---- preference losses --------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_lengths=None,
    rejected_lengths=None,
) -> torch.Tensor:
    """DPO:  −log σ(β·[(log πc − log πref c) − (log πr − log πref r)]), averaged over pairs.

    loss_type "ipo":  ((Δc/|c| − Δr/|r|) − 1/(2β))², with Δ the policy/reference log-ratio and
    |c|, |r| the completion lengths (TRL's per-token normalisation; pass the lengths, else 1)."""
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * (chosen - rejected)).mean()
    if loss_type == "ipo":
        if chosen_lengths is not None:
            chosen = chosen / torch.as_tensor(chosen_lengths, dtype=chosen.dtype).clamp(min=1)
            rejected = rejected / torch.as_tensor(rejected_lengths, dtype=rejected.dtype).clamp(
                min=1
            )
        return ((chosen - rejected - 1 / (2 * beta)) ** 2).mean()
    raise ValueError(f"unknown DPO loss_type {loss_type!r} (choose sigmoid, ipo)")


def dpo_metrics(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float
) -> dict[str, float]:
    """Implicit rewards β·log(π/πref): their means, margin, and how often chosen beats rejected."""
    chosen = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return {
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/margins": float((chosen - rejected).mean()),
        "rewards/accuracies": float((chosen > rejected).float().mean()),
    }


def reward_loss(chosen_scores, rejected_scores, margin=None) -> torch.Tensor:
    """Bradley–Terry:  −log σ(r_chosen − r_rejected − margin), averaged over pairs."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


# ---- policy-gradient pieces (PPO, GRPO) --------------------------------------------------------


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL(π‖πref) estimate from samples of π: k1 = log π/πref (unbiased, noisy);
    k3 = (πref/π) − 1 − log(πref/π) (unbiased, never negative, lower variance)."""
    log_ratio = logps - ref_logps
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r} (choose k1, k3)")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked tokens (masked tokens are a prefix-free
    run; positions after the last one count as terminal).

    δ_t = r_t + γ·V_{t+1} − V_t ;  A_t = δ_t + γλ·A_{t+1} ;  returns = A + V."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = (
            values[:, t + 1] * mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        )
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logps, old_logps, advantages, mask, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's surrogate:  −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) with ρ = π/π_old; returns (loss, clip fraction)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped < unclipped).float(), mask)
    return loss, clipfrac.detach()


def clipped_value_loss(values, old_values, returns, mask, clip: float = 0.2) -> torch.Tensor:
    """½·max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²): the value head may not jump far per update."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each completion's reward minus its group's mean (÷ the group's std when `scale`): [N·G] → [N·G]."""
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + 1e-4)
    return centred.reshape(-1)
