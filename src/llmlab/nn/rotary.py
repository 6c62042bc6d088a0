"""Rotary position embeddings (RoPE), with the `linear` and `llama3` context-extension schemes.

RoPE rotates each (x_i, x_{i+d/2}) pair of a query/key head by an angle proportional to the token's
position, so the dot product q·k depends only on the distance between the two tokens. Frequencies
fall geometrically from 1 to 1/theta across the pairs. We use the "rotate half" layout of Hugging
Face checkpoints (pairs are i and i + d/2, not adjacent elements).
"""

from __future__ import annotations

import math

import torch

from llmlab.errors import UnsupportedArchitectureError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_inverse_frequencies(
    head_dim: int, theta: float, scaling: dict | None = None
) -> torch.Tensor:
    """Per-pair angular frequencies, adjusted for the checkpoint's rope_scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq.float()
    if rope_type == "linear":
        # Positions are divided by the factor: equivalent to dividing every frequency.
        return (inv_freq / scaling["factor"]).float()
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, scaling).float()
    raise UnsupportedArchitectureError(
        f"rope_scaling type '{rope_type}' is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
    )


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's scheme: slow (long-wavelength) pairs are stretched by `factor`, fast ones kept,
    and the band between is interpolated smoothly."""
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    wavelength = 2 * math.pi / inv_freq
    long_wavelength, short_wavelength = old_context / low, old_context / high
    stretched = torch.where(wavelength > long_wavelength, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelength - low) / (high - low)
    blended = (1 - smooth) * stretched / factor + smooth * stretched
    in_between = (wavelength >= short_wavelength) & (wavelength <= long_wavelength)
    return torch.where(in_between, blended, stretched)


class RotaryEmbedding(torch.nn.Module):
    """Computes cos/sin tables for given positions (on the fly: no maximum length to allocate)."""

    def __init__(self, head_dim: int, theta: float, scaling: dict | None = None):
        super().__init__()
        self.register_buffer(
            "inv_freq", rope_inverse_frequencies(head_dim, theta, scaling), persistent=False
        )

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [..., T] → cos, sin of shape [..., T, head_dim] in float32."""
        angles = positions.float()[..., None] * self.inv_freq
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, head_dim] by the angles whose cos/sin are given (broadcast over heads)."""
    half = x.shape[-1] // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated_half.float() * sin).to(x.dtype)
