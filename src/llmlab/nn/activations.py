"""Activation functions looked up by their Hugging Face config name (`hidden_act`).

    from llmlab.nn.activations import get_activation
    act = get_activation("gelu_new")   # a plain function: act(x) -> tensor

Several HF names mean the same curve: "gelu_new", "gelu_fast", "gelu_accurate" and
"gelu_pytorch_tanh" are all the tanh approximation of GELU (written differently in HF, equal to
~1e-7), so they share one implementation here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmlab.errors import UnsupportedArchitectureError


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, x * Phi(x) via erf (original BERT)."""
    return F.gelu(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (GPT-2's "gelu_new")."""
    return F.gelu(x, approximate="tanh")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x), the sigmoid approximation used by CLIP."""
    return x * torch.sigmoid(1.702 * x)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_accurate": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "linear": identity,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation for a config's `hidden_act`; unknown names are an unsupported architecture."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ACTIVATIONS))
        raise UnsupportedArchitectureError(
            f"activation '{name}' is not supported (known: {known})"
        ) from None
