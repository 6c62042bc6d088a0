"""The activations of the notes, written from their formulas, with their derivatives.

    from llmlab.exp.blocks.classic_activations import ACTIVATION_FUNCTIONS, sigmoid_derivative
    y = ACTIVATION_FUNCTIONS["elu"](x)

(`llmlab.nn.activations` maps Hugging Face config names to torch's fused kernels for real models;
this module is the readable version the foundations lab studies.) Each function matches its
torch.nn.functional counterpart (tests/test_lab_activations_init.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """σ(x) = 1 / (1 + e^(−x)), range (0, 1)."""
    return 1.0 / (1.0 + torch.exp(-x))


def sigmoid_derivative(x: torch.Tensor) -> torch.Tensor:
    """σ'(x) = σ(x)(1 − σ(x)): at most 0.25 (at x = 0) and → 0 as |x| grows (saturation)."""
    s = sigmoid(x)
    return s * (1.0 - s)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = (e^x − e^(−x)) / (e^x + e^(−x)) = 2σ(2x) − 1, range (−1, 1)."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def tanh_derivative(x: torch.Tensor) -> torch.Tensor:
    """1 − tanh²(x): at most 1 (at x = 0), also saturates."""
    return 1.0 - tanh(x) ** 2


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x): derivative 1 for x > 0, so it does not shrink gradients there."""
    return torch.where(x > 0, x, torch.zeros_like(x))


def leaky_relu(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    """x for x > 0, slope·x otherwise (no dead units)."""
    return torch.where(x > 0, x, slope * x)


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """x for x > 0, α(e^x − 1) otherwise (smooth, negative outputs push the mean toward 0)."""
    return torch.where(x > 0, x, alpha * (torch.exp(torch.clamp(x, max=0.0)) - 1.0))


def gelu(x: torch.Tensor) -> torch.Tensor:
    """x · Φ(x), Φ the standard normal CDF (BERT, GPT)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def silu(x: torch.Tensor) -> torch.Tensor:
    """x · σ(x), also called Swish (Llama's MLP gate)."""
    return x * sigmoid(x)


ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
}
