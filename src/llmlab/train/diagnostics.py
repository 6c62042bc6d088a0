"""Gradient diagnostics: make vanishing/exploding gradients, saturation and loss spikes visible.

Usable on any nn.Module, inside or outside the trainer:

    loss.backward()
    norms = layer_grad_norms(model)                 # {"net.0": 3e-9, ..., "net.9": 0.2}
    message = find_vanishing(norms, ratio=1e-3)     # a warning naming the starved layers, or None
    before = snapshot_weights(model); optimizer.step()
    ratios = update_weight_ratios(model, before)    # |Δw| / |w| per layer (healthy: ~1e-3)
    with SaturationMonitor(model) as sat: model(x)  # sat.stats() → share of sigmoid/tanh inputs in
                                                    # the flat region, per activation module

A "layer" is a module that owns parameters directly (a Linear, a LayerNorm, an Embedding), named as
in `model.named_modules()`; order is registration order, which for most models is input → output.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

import torch
from torch import nn

# Inputs beyond these magnitudes sit where the derivative is < ~2% (sigmoid) / ~7% (tanh) of its peak.
SATURATION_THRESHOLDS = {nn.Sigmoid: 4.0, nn.Tanh: 2.0}


def _layers(model: nn.Module):
    """(name, module, [params with grads or not]) for modules that own parameters directly."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            yield name or "<root>", module, params


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each layer's gradient (all its own parameters together); layers without grads skipped."""
    norms = {}
    for name, _, params in _layers(model):
        grads = [p.grad.detach().float() for p in params if p.grad is not None]
        if grads:
            norms[name] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    return norms


def layer_weight_norms(model: nn.Module) -> dict[str, float]:
    return {
        name: math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in params))
        for name, _, params in _layers(model)
    }


def snapshot_weights(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Copies of every layer's parameters, to measure the next update against."""
    return {name: [p.detach().clone() for p in params] for name, _, params in _layers(model)}


def update_weight_ratios(
    model: nn.Module, before: dict[str, list[torch.Tensor]]
) -> dict[str, float]:
    """‖w_after − w_before‖ / ‖w_before‖ per layer. ~1e-3 is healthy; ≫1e-2 is too aggressive."""
    ratios = {}
    for name, _, params in _layers(model):
        if name not in before:
            continue
        delta = sum(
            float((p.detach().float() - b.float()).pow(2).sum())
            for p, b in zip(params, before[name])
        )
        weight = sum(float(b.float().pow(2).sum()) for b in before[name])
        ratios[name] = math.sqrt(delta) / (math.sqrt(weight) + 1e-12)
    return ratios


def nonfinite_layers(model: nn.Module) -> list[str]:
    """Layers whose gradient holds inf or NaN."""
    return [
        name
        for name, _, params in _layers(model)
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params)
    ]


def _comparable_layers(model: nn.Module | None, norms: dict[str, float]) -> list[str]:
    """Layers whose norms can be compared across depth: skip embeddings (their gradient is sparse,
    only the rows of tokens in the batch get one) and 1-D-only layers (norm scales, biases)."""
    if model is None:
        return list(norms)
    keep = []
    for name, module, params in _layers(model):
        if (
            name in norms
            and not isinstance(module, nn.Embedding)
            and any(p.dim() >= 2 for p in params)
        ):
            keep.append(name)
    return keep


def find_vanishing(
    norms: dict[str, float], ratio: float = 1e-3, model: nn.Module | None = None
) -> str | None:
    """Warn when the first quarter of the layers gets < `ratio` × the gradient of the last quarter."""
    names = _comparable_layers(model, norms)
    if len(names) < 4:
        return None
    quarter = max(1, len(names) // 4)
    early, late = names[:quarter], names[-quarter:]
    early_norm = statistics.fmean(norms[n] for n in early)
    late_norm = statistics.fmean(norms[n] for n in late)
    if late_norm > 0 and early_norm < ratio * late_norm:
        listed = ", ".join(f"{n} ({norms[n]:.1e})" for n in early)
        return (
            f"vanishing gradients: early layers {listed} get {early_norm / late_norm:.1e}× the gradient "
            f"of the last layers ({', '.join(late)}: {late_norm:.1e}); try residuals, normalization, "
            f"ReLU-family activations or He/Xavier init"
        )
    return None


def largest_layers(norms: dict[str, float], k: int = 3) -> str:
    top = sorted(norms.items(), key=lambda item: -item[1] if math.isfinite(item[1]) else -math.inf)[
        :k
    ]
    return ", ".join(f"{n} ({v:.1e})" for n, v in top)


class RunningMedian:
    """Median of the last `window` values (for spike detection)."""

    def __init__(self, window: int):
        self.values: deque[float] = deque(maxlen=window)

    def median(self) -> float | None:
        return (
            statistics.median(self.values)
            if len(self.values) >= min(5, self.values.maxlen)
            else None
        )

    def add(self, value: float):
        if math.isfinite(value):
            self.values.append(value)

    def state_dict(self):
        return list(self.values)

    def load_state_dict(self, values):
        self.values.clear()
        self.values.extend(values)


class ExplodingDetector:
    """Flags an applied gradient norm that is huge, or that jumps far above its recent median."""

    def __init__(self, threshold: float = 100.0, spike_factor: float = 10.0, window: int = 20):
        self.threshold, self.spike_factor = threshold, spike_factor
        self.history = RunningMedian(window)

    def check(self, norm: float) -> str | None:
        median = self.history.median()
        self.history.add(norm)
        if not math.isfinite(norm):
            return f"exploding gradients: the gradient norm is {norm}"
        if norm > self.threshold:
            return f"exploding gradients: gradient norm {norm:.3g} > {self.threshold:g}; turn on clipping or lower the lr/init scale"
        if median and norm > self.spike_factor * median:
            return f"exploding gradients: gradient norm {norm:.3g} jumped to {norm / median:.1f}× its recent median {median:.3g}"
        return None


class LossSpikeDetector:
    """Flags a loss above `factor` × the median of the last `window` losses."""

    def __init__(self, factor: float = 1.5, window: int = 20):
        self.factor = factor
        self.history = RunningMedian(window)

    def check(self, loss: float) -> str | None:
        median = self.history.median()
        self.history.add(loss)
        if (
            median is not None
            and median > 0
            and math.isfinite(loss)
            and loss > self.factor * median
        ):  # RL losses sit at 0 or below
            return f"loss spike: {loss:.4g} is {loss / median:.2f}× the recent median {median:.4g}"
        return None


class SaturationMonitor:
    """Forward hooks on nn.Sigmoid / nn.Tanh modules counting inputs in the flat region.

    Use as a context manager around forward passes, or call `attach()` / `detach()`;
    `stats()` returns {module name: share of saturated inputs} since the last `reset()`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.handles: list = []
        self.counts: dict[str, list[int]] = {}

    def attach(self):
        for name, module in self.model.named_modules():
            threshold = next(
                (t for kind, t in SATURATION_THRESHOLDS.items() if isinstance(module, kind)), None
            )
            if threshold is not None:
                self.handles.append(module.register_forward_hook(self._hook(name, threshold)))
        return self

    def _hook(self, name: str, threshold: float):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            counts = self.counts.setdefault(name, [0, 0])
            counts[0] += int((x.abs() > threshold).sum())
            counts[1] += x.numel()

        return hook

    def stats(self) -> dict[str, float]:
        return {name: saturated / max(total, 1) for name, (saturated, total) in self.counts.items()}

    def reset(self):
        self.counts.clear()

    def detach(self):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()


def saturation_warning(stats: dict[str, float], limit: float = 0.5) -> str | None:
    saturated = {n: s for n, s in stats.items() if s > limit}
    if not saturated:
        return None
    listed = ", ".join(f"{n} ({s:.0%})" for n, s in saturated.items())
    return f"saturated activations: {listed} of inputs sit in the flat region; gradients through them vanish"
