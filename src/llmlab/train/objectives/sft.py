"""Supervised fine-tuning: next-token cross-entropy on the tokens the loss mask marks (assistant turns).

Batches come from `train/sft_data.py`: `input_ids` and `loss_mask`, both [batch, seq_len + 1].
Inputs are all but the last column; a target counts when its own mask entry is 1.

A model that exposes its body and head separately (`model.model(ids)` → hidden states,
`model.logits(hidden)`, as Gemma 3 does) gets its LM head applied to the trained positions only:
the same loss, but Gemma's 262k-word head costs what the assistant tokens need, not every prompt
token too (on the notes data the prompt is often a passage longer than the answer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmlab.train.objectives.clm import logits_of


class SFTObjective:
    def __call__(self, model, batch: dict):
        ids, mask = batch["input_ids"], batch["loss_mask"]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        body, head = getattr(model, "model", None), getattr(model, "logits", None)
        if callable(body) and callable(head):
            keep = targets != -100
            logits = head(body(ids[:, :-1])[keep])  # [trained tokens, vocab]
            loss = F.cross_entropy(logits.float(), targets[keep])
            return loss, {"tokens": ids[:, :-1].numel(), "trained_tokens": int(keep.sum())}
        logits = logits_of(model(ids[:, :-1]))
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        trained = int(mask[:, 1:].sum())
        return loss, {"tokens": ids[:, :-1].numel(), "trained_tokens": trained}


def completion_logps(model, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Σ log p(token) over each row's completion tokens: [B, T] ids and 0/1 mask → [B]."""
    from llmlab.train.losses import token_logps

    logits = logits_of(model(input_ids[:, :-1]))
    per_token = token_logps(logits, input_ids[:, 1:])
    return (per_token * completion_mask[:, 1:].to(per_token.dtype)).sum(-1)
