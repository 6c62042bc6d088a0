"""The frozen reference policy πref for DPO, PPO and GRPO, and completion log-probs.

With LoRA the reference is free: the same model with its adapters switched off. Without LoRA it is
a frozen copy taken before training starts.

    ref = Reference(model)
    ref.token_logps(ids)                        # [B, T-1] log πref of every next token
    ref.completion_logps(ids, completion_mask)  # [B] summed over the completion tokens only
    ref.pair_logps(dpo_batch)                   # [2B] the same for a DPO batch, prompts computed once
"""

from __future__ import annotations

import contextlib
import copy

import torch

from llmlab.models.llama import LlamaForCausalLM
from llmlab.nn.lora import adapters_disabled, lora_layers
from llmlab.train.losses import summed_logps, token_logps
from llmlab.train.objectives.clm import logits_of
from llmlab.train.shared_prefix import shared_prefix_logps, supports_shared_prefix


def completion_logps(model, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Σ log p(token) over each row's completion tokens: ids / mask [B, T] → [B] (float32).

    On an llmlab decoder only the completion positions reach the LM head and the log-softmax: the
    prompt and padding rows never become [V]-wide logits (with a 49k vocabulary the head is a fifth
    of the model's FLOPs and its logits most of the activation memory). Other models (transformers,
    DDP-wrapped) take the plain path over all positions."""
    inputs, targets = input_ids[:, :-1], input_ids[:, 1:]
    mask = completion_mask[:, 1:].bool()
    if not isinstance(model, LlamaForCausalLM):
        per_token = token_logps(logits_of(model(inputs)), targets)
        return (per_token * mask).sum(-1)
    rows, cols = mask.nonzero(as_tuple=True)
    hidden = model.model(inputs)[rows, cols]  # [N completion tokens, H]
    return summed_logps(model.lm_head(hidden), targets[rows, cols], rows, len(input_ids))


def pair_logps(model, batch: dict) -> torch.Tensor:
    """Completion log-probs of a DPO batch ([2B]: chosen rows, then rejected): the prefix-shared
    forward where the model allows it (each prompt computed once), else completion_logps."""
    if supports_shared_prefix(model, batch):
        return shared_prefix_logps(model, batch)
    return completion_logps(model, batch["input_ids"], batch["completion_mask"])


class Reference:
    def __init__(self, policy):
        self.policy = policy
        self.copy = None
        if not lora_layers(policy):
            self.copy = copy.deepcopy(policy).eval().requires_grad_(False)

    def _context(self):
        return adapters_disabled(self.policy) if self.copy is None else contextlib.nullcontext()

    def _model(self):
        return self.copy if self.copy is not None else self.policy

    @torch.no_grad()
    def token_logps(self, input_ids: torch.Tensor) -> torch.Tensor:
        """log πref(token_t+1 | ≤ t) for every position: [B, T] ids → [B, T-1]."""
        with self._context():
            return token_logps(logits_of(self._model()(input_ids[:, :-1])), input_ids[:, 1:])

    @torch.no_grad()
    def completion_logps(
        self, input_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """log πref of each row's completion (summed): [B, T] → [B]."""
        with self._context():
            return completion_logps(self._model(), input_ids, completion_mask)

    @torch.no_grad()
    def pair_logps(self, batch: dict) -> torch.Tensor:
        """log πref of a DPO batch's completions: [2B]."""
        with self._context():
            return pair_logps(self._model(), batch)
