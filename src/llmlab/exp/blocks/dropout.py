"""Dropout two ways: inverted (what frameworks do) and the notes' original form.

    from llmlab.exp.blocks.dropout import InvertedDropout, ScaleAtInferenceDropout
    drop = InvertedDropout(p_drop=0.5)          # train: x·m/(1−p_drop); eval: x unchanged
    notes = ScaleAtInferenceDropout(keep=0.5)   # train: x·m; eval: x·keep   (the notes' formula)

Both keep the expected activation equal between training and inference. They differ in *where* the
compensation happens, and mixing them up is a real bug: a model trained with inverted dropout
(torch.nn.Dropout) whose activations are multiplied by the keep probability at inference, as the
notes prescribe, comes out scaled by `keep` (see `llmlab exp run dropout`).
"""

from __future__ import annotations

import torch
from torch import nn


def _keep_mask(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Bernoulli(keep) mask: 1 keeps a unit, 0 drops it."""
    return (torch.rand_like(x) < keep).to(x.dtype)


class InvertedDropout(nn.Module):
    """Drop each unit with probability p_drop while training and divide survivors by 1 − p_drop,
    so nothing needs to change at inference."""

    def __init__(self, p_drop: float = 0.5):
        super().__init__()
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"p_drop must be in [0, 1), got {p_drop}")
        self.p_drop = p_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p_drop == 0.0:
            return x
        keep = 1.0 - self.p_drop
        return x * _keep_mask(x, keep) / keep


class ScaleAtInferenceDropout(nn.Module):
    """The notes' formula: train x̃ = x·m with m ~ Bernoulli(keep); inference multiplies by keep."""

    def __init__(self, keep: float = 0.5):
        super().__init__()
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * _keep_mask(x, self.keep)
        return x * self.keep
