"""What every foundations-lab experiment shares: the result type, seeding, data and small loops.

An experiment module defines NAME, TITLE, CLAIM (the notes' words, Chinese + English gloss) and
`run(fast: bool) -> Outcome`. The Outcome carries the measured numbers, a list of checks — each a
sentence with the numbers in it and a bool computed from them — and a matplotlib figure. The
verdict is `all(checks)`: nothing is hard-coded. `llmlab.exp.runner` writes the files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Claim:
    section: str  # the notes' heading it comes from
    zh: str  # the notes' words (obvious repair errors of the rough repair fixed)
    en: str  # English gloss


@dataclass
class Check:
    text: str
    held: bool


@dataclass
class Outcome:
    numbers: dict
    checks: list[Check]
    figure: object  # matplotlib Figure
    discussion: str = ""  # what the numbers mean, and where the notes' wording differs
    timings: dict = field(default_factory=dict)  # wall-clock numbers: excluded from rerun equality

    @property
    def held(self) -> bool:
        return all(c.held for c in self.checks)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rounded(value, digits: int = 6):
    """Round floats (recursively) to `digits` significant digits so result.json stays readable."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value) or value == 0.0:
            return value if math.isfinite(value) else str(value)
        return float(f"{value:.{digits}g}")
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def fmt(x: float) -> str:
    """Short human format for numbers quoted in check sentences."""
    if x != x or math.isinf(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.3g}"


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


# ---------------------------------------------------------------- data and loops


def teacher_classification(n: int, dim: int, classes: int, seed: int, noise: float = 0.0):
    """Gaussian inputs labelled by a fixed random 2-layer teacher net (learnable, not linear)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 32, generator=g), torch.randn(32, classes, generator=g)
    logits = torch.tanh(x @ w1) @ w2 + noise * torch.randn(n, classes, generator=g)
    return x, logits.argmax(dim=1)


def layer_grad_norms(layers: list[nn.Module]) -> list[float]:
    """L2 norm of each layer's weight gradient, first layer first."""
    return [layer.weight.grad.norm().item() for layer in layers]


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Yield index tensors of a fresh random permutation, batch by batch (one epoch)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
