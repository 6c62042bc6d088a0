"""Causal language modelling: predict token t+1 from tokens ≤ t.

Batches hold `input_ids` of shape [batch, seq_len + 1] (see train/data.py); inputs are all but the
last column, targets all but the first. Works with llmlab models (logits tensor) and transformers
models (an output object with `.logits`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logits_of(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.logits


class CausalLMObjective:
    def __init__(self, ignore_index: int = -100):
        self.ignore_index = ignore_index

    def __call__(self, model, batch: dict):
        ids = batch["input_ids"]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        logits = logits_of(model(inputs))
        # Cross-entropy in float32 even under autocast: log-softmax over a big vocab needs the range.
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=self.ignore_index,
        )
        return loss, {"tokens": targets.numel()}
