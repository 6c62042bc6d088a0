"""Fake quantization: quantize-then-dequantize in the forward pass, identity in the backward
(the straight-through estimator, STE), so a model can train against its own rounding (QAT).

    y = fake_quantize(x, scale, zero_point, bits=8)               # values on the int8 grid
    w_q = fake_quantize_int4_groups(w, group_size=32)              # RTN int4 grid of the weight
    layer = QATLinear.from_linear(linear, group_size=32)           # weight fake-quantized to int4

The STE passes the gradient through where x fell inside the code range and zeroes it where x
was clipped (the derivative of clamp); rounding counts as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.quant.observers import MovingAverageMinMaxObserver, code_range
from llmlab.quant.rtn import int4_group_params


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        codes = x / scale + zero_point
        inside = (codes >= qmin - 0.5) & (codes <= qmax + 0.5)
        ctx.save_for_backward(inside)
        return (codes.round().clamp(qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x, scale, zero_point, bits: int = 8, symmetric: bool = False) -> torch.Tensor:
    """x on the grid scale · (q − zero_point), q in the code range; gradient by STE."""
    qmin, qmax = code_range(bits, symmetric)
    return _FakeQuantize.apply(x, scale, zero_point, qmin, qmax)


class _FakeQuantizeGroups(torch.autograd.Function):
    """Int4 RTN of groups along the input dimension; the grid (min, scale per group) is a
    function of the weight but treated as a constant in the backward (plain STE)."""

    @staticmethod
    def forward(ctx, weight, group_size: int, levels: int = 15):
        codes, scales, minimums = int4_group_params(weight.detach(), group_size, levels)
        out, inp = weight.shape
        dequant = codes.float().view(out, -1, group_size) * scales[..., None] + minimums[..., None]
        return dequant.view(out, inp).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def fake_quantize_int4_groups(weight: torch.Tensor, group_size: int, levels: int = 15):
    return _FakeQuantizeGroups.apply(weight, group_size, levels)


class QATLinear(nn.Linear):
    """nn.Linear whose forward uses its weight on the int4 group grid (and optionally its input on
    an int8 grid tracked by a moving-average observer). The float weight is what trains;
    `llmlab.quant.qat.convert_qat` turns the layer into an Int4Linear with exactly that grid."""

    def __init__(
        self, in_features, out_features, bias=True, group_size=32, act_bits=None, levels=15
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.group_size, self.levels = group_size, levels
        self.act_observer = MovingAverageMinMaxObserver(act_bits) if act_bits else None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group_size: int = 32, act_bits=None, levels: int = 15
    ) -> QATLinear:
        with torch.device("meta"):
            layer = cls(
                linear.in_features,
                linear.out_features,
                linear.bias is not None,
                group_size,
                act_bits,
                levels,
            )
        layer.weight = linear.weight  # shared, so a tied embedding stays tied while training
        layer.bias = linear.bias
        return layer

    def forward(self, x):
        if self.act_observer is not None:
            if self.training:
                self.act_observer(x)
            scale, zero = self.act_observer.qparams()
            x = fake_quantize(x, scale.to(x.device), zero.to(x.device), self.act_observer.bits)
        weight = fake_quantize_int4_groups(self.weight, self.group_size, self.levels)
        return F.linear(x, weight, self.bias)
