"""Reward-model objective: Bradley–Terry on (chosen, rejected) pairs scored by a RewardModel.

Batch: chosen_ids / rejected_ids [B, T] right-padded, chosen_lengths / rejected_lengths [B], and an
optional per-pair `margin` [B]. Metrics: accuracy (chosen scored higher) and mean margin.
"""

from __future__ import annotations

import torch

from llmlab.train.losses import reward_loss


class RewardObjective:
    def __call__(self, model, batch: dict):
        pairs = len(batch["chosen_ids"])
        width = max(batch["chosen_ids"].shape[1], batch["rejected_ids"].shape[1])
        pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
        ids = torch.cat([pad(batch["chosen_ids"]), pad(batch["rejected_ids"])])
        scores = model(ids, torch.cat([batch["chosen_lengths"], batch["rejected_lengths"]]))
        chosen, rejected = scores[:pairs], scores[pairs:]
        loss = reward_loss(chosen, rejected, batch.get("margin"))
        chosen, rejected = chosen.detach(), rejected.detach()
        return loss, {
            "accuracy": float((chosen > rejected).float().mean()),
            "margin": float((chosen - rejected).mean()),
            "tokens": int(ids.numel()),
        }
