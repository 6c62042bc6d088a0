"""The frozen reference policy πref for DPO, PPO and GRPO.

With LoRA the reference is free: the same model with its adapters switched off. Without LoRA it is
a frozen copy taken before training starts.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from llmlab.nn.lora import adapters_disabled, lora_layers
from llmlab.train.losses import token_logps
from llmlab.train.objectives.clm import logits_of


class Reference:
    def __init__(self, policy):
        self.policy = policy
        self.copy = None
        if not lora_layers(policy):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    def _context(self):
        return adapters_disabled(self.policy) if self.copy is None else contextlib.nullcontext()

    @torch.no_grad()
    def token_logps(self, input_ids: torch.Tensor) -> torch.Tensor:
        """log πref(token_t+1 | ≤ t) for every position: [B, T] ids → [B, T-1]."""
        model = self.copy if self.copy is not None else self.policy
        with self._context():
            return token_logps(logits_of(model(input_ids[:, :-1])), input_ids[:, 1:])
