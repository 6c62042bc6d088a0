"""PPO (RLHF) objective: clipped policy and value losses on a PolicyWithValue.

`prepare_ppo` turns a scored rollout into PPO targets (no gradients):
  per-token reward  r_t = −kl_coef·KL_t (k1 or k3 vs the frozen reference) + score on the last token,
  GAE(γ, λ) over the value head's estimates → advantages (whitened) and returns.
The objective then computes  loss = clipped surrogate + vf_coef · clipped value loss.
Metrics: objective/kl, objective/scores, policy/clipfrac, loss/policy, loss/value.
"""

from __future__ import annotations

import torch

from llmlab.train.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_estimate,
    masked_mean,
    token_logps,
    whiten,
)


def prepare_ppo(
    model,
    reference,
    kl_coef: float = 0.05,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
):
    @torch.no_grad()
    def prepare(batch: dict) -> dict:
        ids = batch["input_ids"]
        mask = batch["completion_mask"][:, 1:].float()
        logits, values = model.logits_and_values(ids[:, :-1])
        logps = token_logps(logits, ids[:, 1:])
        ref = reference.token_logps(ids)
        kl = kl_estimate(logps, ref, kl_estimator) * mask
        rewards = -kl_coef * kl
        last = (
            mask.cumsum(1) == mask.sum(1, keepdim=True)
        ) & mask.bool()  # each row's final completion token
        rewards = rewards + last.float() * batch["scores"][:, None]
        advantages, returns = gae(rewards, values * mask, mask, gamma, lam)
        batch.update(
            old_logps=logps,
            old_values=values * mask,
            advantages=whiten(advantages, mask),
            returns=returns,
            kl=(kl.sum(1)).mean(),
        )
        return batch

    return prepare


class PPOObjective:
    def __init__(self, clip: float = 0.2, value_clip: float = 0.2, vf_coef: float = 0.5):
        self.clip, self.value_clip, self.vf_coef = clip, value_clip, vf_coef

    def __call__(self, model, batch: dict):
        ids = batch["input_ids"]
        mask = batch["completion_mask"][:, 1:].float()
        logits, values = model.logits_and_values(ids[:, :-1])
        logps = token_logps(logits, ids[:, 1:])
        policy_loss, clipfrac = clipped_policy_loss(
            logps, batch["old_logps"], batch["advantages"], mask, self.clip
        )
        value_loss = clipped_value_loss(
            values, batch["old_values"], batch["returns"], mask, self.value_clip
        )
        loss = policy_loss + self.vf_coef * value_loss
        return loss, {
            "objective/kl": float(batch["kl"]),
            "objective/scores": float(batch["scores"].mean()),
            "policy/clipfrac": float(clipfrac),
            "loss/policy": float(policy_loss.detach()),
            "loss/value": float(value_loss.detach()),
            "value/mean": float(masked_mean(values.detach(), mask)),
            "tokens": int(ids.numel()),
        }
