"""Normalization layers from their formulas: BatchNorm, LayerNorm, RMSNorm.

    from llmlab.exp.blocks.norms import BatchNorm, LayerNorm, RMSNorm
    bn = BatchNorm(64)        # x [N, C] or [N, C, L] or [N, C, H, W]; statistics over everything but C
    ln = LayerNorm(64)        # statistics over the last dimension of each sample
    rms = RMSNorm(64)         # no mean subtraction, no bias: x / sqrt(mean(x²) + eps) * weight

BatchNorm's statistics come from the batch, so a model's output for one sample depends on the other
samples in its batch while training; at eval time it switches to running averages gathered during
training (that switch is the train/eval gap `llmlab exp run bn-vs-ln` measures). LayerNorm and
RMSNorm use each sample's own features and behave the same in train and eval. All three match
torch.nn.BatchNorm1d/2d, LayerNorm and RMSNorm numerically (tests/test_lab_norms.py).
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm(nn.Module):
    """y = (x − μ_B) / sqrt(σ²_B + eps) · γ + β per channel (dim 1), μ_B, σ²_B over the batch.

    Running statistics follow torch: running = (1 − momentum)·running + momentum·batch, with the
    unbiased batch variance stored (the biased one normalizes)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduce_dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast per-channel vectors over [N, C, ...]
        if self.training:
            mean = x.mean(dim=reduce_dims)
            var = x.var(dim=reduce_dims, unbiased=False)
            count = x.numel() // x.shape[1]
            if count < 2:
                raise ValueError("BatchNorm needs more than one value per channel when training")
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(
                    self.momentum * var * count / (count - 1)
                )
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


class LayerNorm(nn.Module):
    """y = (x − mean(x)) / sqrt(var(x) + eps) · γ + β over the last dimension of each sample."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · γ: LayerNorm without centring or bias (Llama's norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
