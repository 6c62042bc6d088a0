"""GRPO objective: PPO's clipped surrogate with group-normalised rewards as advantages, no critic.

The batch comes from a RolloutSource with `prepare_grpo`: input_ids / completion_mask [N·G, T],
scores [N·G], advantages [N·G] (reward − group mean, ÷ group std), old_logps [N·G, T-1], and,
when kl_beta > 0, ref_logps. Per token:  −min(ρ·A, clip(ρ, 1±ε)·A) + β·k3(π, πref), averaged over
all completion tokens of the batch.
"""

from __future__ import annotations

import torch

from llmlab.train.losses import (
    clipped_policy_loss,
    grpo_advantages,
    kl_estimate,
    masked_mean,
    token_logps,
)
from llmlab.train.objectives.clm import logits_of


def prepare_grpo(model, reference, group_size: int, kl_beta: float, scale_rewards: bool = True):
    """A RolloutSource `prepare` callback: old and reference log-probs plus group advantages."""

    @torch.no_grad()
    def prepare(batch: dict) -> dict:
        ids = batch["input_ids"]
        batch["old_logps"] = token_logps(logits_of(model(ids[:, :-1])), ids[:, 1:])
        if kl_beta > 0:
            batch["ref_logps"] = reference.token_logps(ids)
        batch["advantages"] = grpo_advantages(batch["scores"], group_size, scale_rewards)
        return batch

    return prepare


class GRPOObjective:
    def __init__(self, clip: float = 0.2, kl_beta: float = 0.0):
        self.clip, self.kl_beta = clip, kl_beta

    def __call__(self, model, batch: dict):
        ids = batch["input_ids"]
        mask = batch["completion_mask"][:, 1:].float()
        logps = token_logps(logits_of(model(ids[:, :-1])), ids[:, 1:])
        advantages = batch["advantages"][:, None].expand_as(logps)
        loss, clipfrac = clipped_policy_loss(logps, batch["old_logps"], advantages, mask, self.clip)
        metrics = {
            "reward": float(batch["scores"].mean()),
            "policy/clipfrac": float(clipfrac),
            "completion_length": float(mask.sum(1).mean()),
            "tokens": int(ids.numel()),
        }
        if self.kl_beta > 0:
            kl = masked_mean(kl_estimate(logps, batch["ref_logps"], "k3"), mask)
            loss = loss + self.kl_beta * kl
            metrics["kl"] = float(kl.detach())
        return loss, metrics
