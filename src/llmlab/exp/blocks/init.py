"""Xavier (Glorot) and He (Kaiming) initialization from their variance formulas.

    from llmlab.exp.blocks.init import xavier_uniform_, he_normal_
    xavier_uniform_(linear.weight, gain=1.0)     # Var = gain² · 2 / (fan_in + fan_out)
    he_normal_(linear.weight)                    # Var = 2 / fan_in   (for ReLU)

Xavier keeps the variance of activations and gradients roughly constant through layers whose
activation is linear near 0 (tanh, sigmoid up to a gain); He doubles it to make up for ReLU zeroing
half of its inputs. The notes: ReLU → He, sigmoid/tanh → Xavier. Draws use the same RNG calls as
torch.nn.init, so the same seed gives the same weights (tests/test_lab_activations_init.py).
"""

from __future__ import annotations

import math

import torch


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear [out, in] or Conv [out, in, k...] weight."""
    if weight.dim() < 2:
        raise ValueError("fan in/out needs a weight with at least 2 dimensions")
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def xavier_uniform_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    fan_in, fan_out = fans(weight)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))  # U(-a, a) has variance a²/3
    return weight.uniform_(-bound, bound)


@torch.no_grad()
def xavier_normal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    fan_in, fan_out = fans(weight)
    return weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


@torch.no_grad()
def he_uniform_(weight: torch.Tensor) -> torch.Tensor:
    fan_in, _ = fans(weight)
    bound = math.sqrt(3.0) * math.sqrt(2.0 / fan_in)
    return weight.uniform_(-bound, bound)


@torch.no_grad()
def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    fan_in, _ = fans(weight)
    return weight.normal_(0.0, math.sqrt(2.0 / fan_in))
