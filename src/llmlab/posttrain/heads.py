"""Scalar heads on a decoder: a reward model (score of the last token) and a policy with a value head.

rm = RewardModel(backbone)                   # backbone: LlamaForCausalLM (its lm_head is unused)
scores = rm(input_ids, lengths)              # [batch]: score at each row's last real token
policy = PolicyWithValue(model)
logits, values = policy.logits_and_values(input_ids)   # [B, T, V], [B, T]
logits = policy(input_ids)                   # plain LM call, so samplers and objectives see a decoder
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_FILE = "score_head.safetensors"


def hidden_states(decoder, input_ids: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [B, T, H] of an llmlab decoder (LlamaForCausalLM.model)."""
    return decoder.model(input_ids)


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(backbone.config.hidden_size, 1, bias=False)
        nn.init.normal_(
            self.score.weight, std=1 / (backbone.config.hidden_size + 1)
        )  # small start: scores near 0

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.backbone, input_ids)
        last = hidden[torch.arange(len(input_ids), device=input_ids.device), lengths - 1]
        return self.score(last.float()).squeeze(-1)

    def save_head(self, folder: str | Path):
        save_file(
            {"score.weight": self.score.weight.detach().cpu().contiguous()},
            str(Path(folder) / HEAD_FILE),
        )

    def load_head(self, folder: str | Path):
        self.score.weight.data.copy_(load_file(str(Path(folder) / HEAD_FILE))["score.weight"])


class PolicyWithValue(nn.Module):
    """The policy decoder plus a value head V(prefix) on its hidden states (PPO's critic)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.policy.config

    @property
    def max_context(self):
        return self.policy.max_context

    @property
    def lm_head(self):
        return self.policy.lm_head

    def forward(self, input_ids, cache=None):
        return self.policy(input_ids, cache)

    def logits_and_values(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = hidden_states(self.policy, input_ids)
        logits = self.policy.lm_head(hidden).float()
        return logits, self.value_head(hidden.float()).squeeze(-1)
