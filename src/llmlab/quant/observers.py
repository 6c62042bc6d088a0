"""Observers: watch tensors go by, then say which (scale, zero point) quantizes them best.

    obs = MinMaxObserver(bits=8, symmetric=False)              # per tensor
    obs = MinMaxObserver(bits=8, symmetric=True, axis=0)       # per output channel of a weight
    for x in batches: obs(x)
    scale, zero_point = obs.qparams()                           # x ≈ scale · (q − zero_point)

Codes are signed: [-2^(b-1), 2^(b-1) − 1] asymmetric; symmetric uses [-(2^(b-1) − 1), 2^(b-1) − 1]
(−128 is left out so that the range is the same on both sides) with zero point 0.

- `MinMaxObserver`: the running min and max (0 is always inside the range, so 0 is exact).
- `MovingAverageMinMaxObserver`: min and max of each batch, averaged with momentum: one outlier
  batch does not stretch the range for good (the usual choice for activations during QAT).
- `HistogramObserver`: a histogram of |x| (symmetric) or x (asymmetric) over the running range,
  then a clipping range chosen by `criterion`: "percentile" (keep `percentile` % of the values),
  "mse" (least expected squared quantization + clipping error) or "entropy" (TensorRT's KL
  calibration: the clipped, quantized histogram closest to the original). Per tensor only.
"""

from __future__ import annotations

import math

import torch

from llmlab.errors import LlmlabError


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Smallest and largest integer code."""
    high = 2 ** (bits - 1) - 1
    return (-high if symmetric else -high - 1), high


def qparams_from_range(
    low: torch.Tensor, high: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) mapping [low, high] (widened to contain 0) onto the code range."""
    qmin, qmax = code_range(bits, symmetric)
    low = torch.minimum(low.float(), torch.zeros_like(low, dtype=torch.float32))
    high = torch.maximum(high.float(), torch.zeros_like(high, dtype=torch.float32))
    if symmetric:
        scale = (torch.maximum(-low, high) / qmax).clamp(min=1e-12)
        return scale, torch.zeros_like(scale)
    scale = ((high - low) / (qmax - qmin)).clamp(min=1e-12)
    zero_point = (qmin - low / scale).round().clamp(qmin, qmax)
    return scale, zero_point


def fake_quantize_values(x, scale, zero_point, bits: int, symmetric: bool) -> torch.Tensor:
    """x quantized and dequantized (no gradient trick: see fake_quant.py for that)."""
    qmin, qmax = code_range(bits, symmetric)
    return ((x / scale + zero_point).round().clamp(qmin, qmax) - zero_point) * scale


class Observer(torch.nn.Module):
    def __init__(self, bits: int = 8, symmetric: bool = False, axis: int | None = None):
        super().__init__()
        if not 2 <= bits <= 16:
            raise LlmlabError(f"observer bits must be 2…16, got {bits}")
        self.bits, self.symmetric, self.axis = bits, symmetric, axis

    def _reduce(self, x: torch.Tensor, fn) -> torch.Tensor:
        """fn (amin/amax) over every dimension but `axis` (all of them when per tensor)."""
        x = x.detach().float()
        if self.axis is None:
            return fn(x)
        return fn(x.transpose(0, self.axis).reshape(x.shape[self.axis], -1), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observe(x)
        return x

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class MinMaxObserver(Observer):
    def __init__(self, bits: int = 8, symmetric: bool = False, axis: int | None = None):
        super().__init__(bits, symmetric, axis)
        self.low = self.high = None

    def observe(self, x):
        low, high = self._reduce(x, torch.amin), self._reduce(x, torch.amax)
        if self.low is None:
            self.low, self.high = low, high
        else:
            self.low, self.high = torch.minimum(self.low, low), torch.maximum(self.high, high)

    def qparams(self):
        if self.low is None:
            raise LlmlabError("observer saw no data: run calibration batches before converting")
        return qparams_from_range(self.low, self.high, self.bits, self.symmetric)


class MovingAverageMinMaxObserver(MinMaxObserver):
    def __init__(self, bits=8, symmetric=False, axis=None, momentum: float = 0.01):
        super().__init__(bits, symmetric, axis)
        self.momentum = momentum

    def observe(self, x):
        low, high = self._reduce(x, torch.amin), self._reduce(x, torch.amax)
        if self.low is None:
            self.low, self.high = low, high
        else:
            m = self.momentum
            self.low = self.low + m * (low - self.low)
            self.high = self.high + m * (high - self.high)


class HistogramObserver(Observer):
    """Per-tensor histogram; the range grows by re-binning the old counts into the wider bins."""

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        criterion: str = "mse",
        percentile: float = 99.99,
        bins: int = 2048,
    ):
        super().__init__(bits, symmetric, None)
        if criterion not in ("mse", "entropy", "percentile"):
            raise LlmlabError(
                f"unknown histogram criterion '{criterion}' (mse, entropy, percentile)"
            )
        self.criterion, self.percentile, self.bins = criterion, percentile, bins
        self.counts: torch.Tensor | None = None
        self.low = self.high = 0.0

    def observe(self, x):
        x = x.detach().float().reshape(-1)
        if self.symmetric:
            x = x.abs()
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        if self.counts is None:
            self.low, self.high = low, max(high, low + 1e-8)
            self.counts = torch.zeros(self.bins, dtype=torch.float64)
        elif low < self.low or high > self.high:
            self._widen(min(low, self.low), max(high, self.high))
        self.counts += torch.histc(x, self.bins, self.low, self.high).double()

    def _widen(self, low: float, high: float):
        """Move the old counts into bins of the wider range (each old bin by its centre)."""
        width = (self.high - self.low) / self.bins
        centres = self.low + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)
        new_width = (high - low) / self.bins
        index = ((centres - low) / new_width).floor().clamp(0, self.bins - 1).long()
        counts = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, index, self.counts)
        self.counts, self.low, self.high = counts, low, high

    def _edges(self) -> torch.Tensor:
        return torch.linspace(self.low, self.high, self.bins + 1, dtype=torch.float64)

    def qparams(self):
        if self.counts is None:
            raise LlmlabError("observer saw no data: run calibration batches before converting")
        low, high = self._choose_range()
        return qparams_from_range(torch.tensor(low), torch.tensor(high), self.bits, self.symmetric)

    def _choose_range(self) -> tuple[float, float]:
        edges, counts = self._edges(), self.counts
        if self.criterion == "percentile":
            cdf = counts.cumsum(0) / counts.sum()
            keep = self.percentile / 100
            high_bin = int(torch.searchsorted(cdf, torch.tensor(keep, dtype=torch.float64)))
            high = float(edges[min(high_bin + 1, self.bins)])
            if self.symmetric:
                return 0.0, high
            low_bin = int(torch.searchsorted(cdf, torch.tensor(1 - keep, dtype=torch.float64)))
            return float(edges[low_bin]), high
        candidates = self._candidate_ranges()
        if self.criterion == "mse":
            return candidates[int(self._mse(candidates).argmin())]
        return min(candidates, key=self._kl)

    def _candidate_ranges(self) -> list[tuple[float, float]]:
        """Ranges that shrink the observed one toward 0 (keeping its zero position)."""
        fractions = [i / 128 for i in range(8, 129)]
        return [(self.low * f, self.high * f) for f in fractions]

    def _mse(self, candidates: list[tuple[float, float]]) -> torch.Tensor:
        """Expected squared error of quantizing the histogram's bin centres into each range
        (all candidates at once: [candidates, bins]; float32 — only the argmin is used, and the
        SmoothQuant search calls this for every α of every layer)."""
        low, high = (torch.tensor(v, dtype=torch.float32) for v in zip(*candidates))
        scale, zero = qparams_from_range(low, high, self.bits, self.symmetric)
        edges = self._edges().float()
        centres = ((edges[:-1] + edges[1:]) / 2)[None, :]
        rounded = fake_quantize_values(
            centres, scale[:, None], zero[:, None], self.bits, self.symmetric
        )
        return (self.counts.float()[None, :] * (rounded - centres) ** 2).sum(-1)

    def _kl(self, candidate: tuple[float, float]) -> float:
        """KL(P ‖ Q): P the histogram with everything beyond the range piled into its edge bins,
        Q the same after merging into the 2^b code levels and spreading back over non-empty bins."""
        low, high = candidate
        edges = self._edges()
        centres = (edges[:-1] + edges[1:]) / 2
        inside = (centres >= low) & (centres <= high)
        if int(inside.sum()) < 2:
            return math.inf
        p = self.counts[inside].clone()
        p[0] += self.counts[centres < low].sum()
        p[-1] += self.counts[centres > high].sum()
        levels = 2 ** (self.bits - 1) if self.symmetric else 2**self.bits
        bucket = (torch.arange(len(p)) * levels // len(p)).long()
        nonzero = (p > 0).double()
        mass = torch.zeros(levels, dtype=torch.float64).index_add_(0, bucket, p)
        filled = torch.zeros(levels, dtype=torch.float64).index_add_(0, bucket, nonzero)
        q = (mass / filled.clamp(min=1))[bucket] * nonzero
        p, q = p / p.sum(), q / q.sum().clamp(min=1e-30)
        keep = p > 0
        return float((p[keep] * (p[keep] / q[keep].clamp(min=1e-30)).log()).sum())


def make_observer(kind: str, bits: int = 8, symmetric: bool = False, axis=None) -> Observer:
    """By name: minmax, moving-average, histogram-mse, histogram-entropy, percentile."""
    if kind == "minmax":
        return MinMaxObserver(bits, symmetric, axis)
    if kind == "moving-average":
        return MovingAverageMinMaxObserver(bits, symmetric, axis)
    if kind in ("histogram-mse", "histogram-entropy", "percentile"):
        if axis is not None:
            raise LlmlabError(f"the {kind} observer is per tensor only")
        criterion = {"histogram-mse": "mse", "histogram-entropy": "entropy"}.get(kind, kind)
        return HistogramObserver(bits, symmetric, criterion)
    raise LlmlabError(
        f"unknown observer '{kind}' "
        "(minmax, moving-average, histogram-mse, histogram-entropy, percentile)"
    )


OBSERVERS = ("minmax", "moving-average", "histogram-mse", "histogram-entropy", "percentile")
