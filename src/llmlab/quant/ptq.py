"""Post-training W8A8: static (calibrated activation scales) and dynamic (per-token at run time),
optionally with SmoothQuant.

    observers = prepare_static(model, observer="histogram-mse")   # 1. observers on every linear's input
    calibrate(model, calibration_ids)                              # 2. run calibration batches
    convert_static(model, observers)                               # 3. freeze scales → W8A8Linear
    quantize_dynamic(model)                                        # int8 weights now, activations later
    quantize_dynamic(model, calibration_ids, smooth=0.5)           # … with SmoothQuant factors

Static: each linear's input gets an observer (a forward pre-hook); after calibration its
(scale, zero point) is frozen into the layer, one per layer for all tokens — no work at run
time, but a token whose activations fall outside the calibrated range is clipped. Dynamic: only
the weights are quantized offline; each token's activations get their own scale when they arrive
(max |x| / 127), so nothing is clipped, at the cost of one reduction per token and layer.
Weights are int8 per output channel (symmetric, from a per-channel min-max observer) in both.

SmoothQuant (Xiao et al., 2022; `smooth` = α): LLM activations have a few channels with
values ~100× the rest, so one int8 scale per token spends its range on them and rounds the
others away. Per input channel j, s_j = max|x_j|^α / max|w_j|^(1−α) (over calibration tokens and
all the layers that read this input); the weight's column j is multiplied by s_j and the input
divided by it at run time — the product is unchanged, the activation outliers shrink, and the
weights (quantized per output row) absorb them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.mixed import most_sensitive
from llmlab.quant.observers import MinMaxObserver, Observer, make_observer
from llmlab.quant.outliers import outlier_channels
from llmlab.quant.rtn import linear_targets, replace_module, untie_head
from llmlab.quant.smooth import (
    PER_TOKEN_ASYMMETRIC,
    GroupChoice,
    collect_inputs,
    fixed_factors,
    group_choices,
    search_smoothing,
    smoothing_factors,
    smoothing_scales,
)

__all__ = ["W8A8Plan", "plan_w8a8", "quantize_dynamic", "quantize_static", "smoothing_factors"]


def weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [out, in] int8, scale [out]) per output channel, symmetric."""
    observer = MinMaxObserver(8, symmetric=True, axis=0)
    observer(weight)
    scale, _ = observer.qparams()
    codes = (weight.detach().float() / scale[:, None]).round().clamp(-127, 127)
    return codes.to(torch.int8), scale


def _float_outliers(linear: nn.Linear, weight: torch.Tensor, outliers) -> tuple[torch.Tensor, dict]:
    """(`weight` with the outlier columns zeroed — each row's int8 grid is then set by the
    columns that stay int8 —, W8A8Linear's outlier arguments)."""
    if outliers is None:
        return weight, {}
    split = {"outlier_index": outliers, "outlier_weight": linear.weight.detach()[:, outliers]}
    return weight.index_fill(1, outliers, 0), split


def _w8a8(
    linear: nn.Linear,
    input_scale=None,
    input_zero_point=None,
    smooth=None,
    asymmetric=False,
    outliers=None,
    input_group_size=None,
) -> W8A8Linear:
    weight = linear.weight.detach().float()
    if smooth is not None:
        weight = weight * smooth[None, :]
    weight, split = _float_outliers(linear, weight, outliers)
    codes, scale = weight_int8(weight)
    return W8A8Linear(
        codes, scale, linear.bias, input_scale, input_zero_point, smooth, asymmetric,
        input_group_size=input_group_size, **split,
    )  # fmt: skip


def prepare_static(
    model: nn.Module,
    observer: str = "histogram-mse",
    symmetric: bool = False,
    smooth: dict[str, torch.Tensor] | None = None,
    keep_float=(),
) -> dict[str, tuple[Observer, object]]:
    """Attach an activation observer to every linear's input (divided by its smoothing factors
    when given — +inf at float outlier channels: W8A8Plan.divisor — as the converted layer will
    see it) but those in `keep_float`; returns {name: (observer, hook)}."""
    observers = {}
    for name, linear in linear_targets(model):
        if name in keep_float:
            continue
        obs = make_observer(observer, bits=8, symmetric=symmetric)
        s = (smooth or {}).get(name)

        def record(module, args, obs=obs, s=s):
            obs(args[0] if s is None else args[0].float() / s)

        observers[name] = (obs, linear.register_forward_pre_hook(record))
    return observers


@torch.no_grad()
def calibrate(model: nn.Module, calibration: torch.Tensor, batch_size: int = 4):
    """Run the calibration token ids [n, seq] through the model (observers record)."""
    for start in range(0, len(calibration), batch_size):
        model(calibration[start : start + batch_size])


@torch.no_grad()
def convert_static(
    model: nn.Module, observers: dict, smooth: dict | None = None, outliers: dict | None = None
) -> nn.Module:
    for name, (obs, handle) in observers.items():
        handle.remove()
        input_scale, input_zero_point = obs.qparams()
        layer = _w8a8(
            model.get_submodule(name),
            input_scale,
            input_zero_point,
            (smooth or {}).get(name),
            outliers=(outliers or {}).get(name),
        )
        replace_module(model, name, layer)
    untie_head(model)
    return model


@dataclass
class W8A8Plan:
    """What a W8A8 conversion will do: SmoothQuant factors per linear, the linears kept float,
    the input channels each linear keeps in float (outliers.py)."""

    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    keep_float: list[str] = field(default_factory=list)
    choices: list[GroupChoice] = field(default_factory=list)  # per group: α and its error
    smooth: float | str | None = None
    outliers: dict[str, torch.Tensor] = field(default_factory=dict)

    def divisor(self, name: str, width: int) -> torch.Tensor | None:
        """What the linear's input is divided by before it is quantized (as W8A8Linear does)."""
        s, index = self.factors.get(name), self.outliers.get(name)
        if index is None:
            return s
        ones = torch.ones(width) if s is None else s.clone()
        return ones.index_fill(0, index, torch.inf)

    def describe(self) -> dict:
        """For the folder's quantization_config."""
        out: dict = {"smooth": self.smooth}
        if self.smooth == "search":
            out["alphas"] = {c.names[0]: c.alpha for c in self.choices}
        if self.keep_float:
            out["float_layers"] = list(self.keep_float)
        if self.outliers:
            out["outlier_channels"] = len(next(iter(self.outliers.values())))
        return out


@torch.no_grad()
def plan_w8a8(
    model: nn.Module,
    calibration: torch.Tensor | None,
    smooth: float | str | None = None,
    observer: str | None = None,
    keep_float: int = 0,
    float_layers=(),
    outliers: int = 0,
) -> W8A8Plan:
    """smooth: None / 0 (off), α (one for every group) or "search" (per group, least calibration
    error, smooth.py); keep_float: how many groups of linears — those with the largest
    calibration output error after smoothing — stay in float (mixed precision; mixed.py).
    `float_layers`: linears named explicitly to stay float (e.g. "lm_head"), on top of those.
    `observer` None plans for dynamic activations (PER_TOKEN_ASYMMETRIC: dynamic over each
    token's [min, max]), else for static ones from that observer. `outliers`: input channels
    per linear kept in float (the largest calibration max |x| after smoothing; outliers.py)."""
    targets = {name for name, _ in linear_targets(model)}
    unknown = [name for name in float_layers if name not in targets]
    if unknown:
        raise LlmlabError(f"--float-layers: no linear layer named '{unknown[0]}'")
    if smooth is not None and smooth != "search" and not isinstance(smooth, int | float):
        raise LlmlabError(f"--smooth must be a number between 0 and 1 or 'search', got {smooth!r}")
    if smooth == 0:
        smooth = None
    if keep_float < 0:
        raise LlmlabError(f"--keep-float must be at least 0, got {keep_float}")
    if outliers < 0:
        raise LlmlabError(f"--outliers must be at least 0, got {outliers}")
    if smooth is None and not keep_float and not outliers:
        return W8A8Plan(keep_float=list(float_layers))
    if calibration is None:
        raise LlmlabError("SmoothQuant, --keep-float and --outliers need calibration text")
    if isinstance(smooth, float | int):
        smoothing_scales(torch.ones(1), torch.ones(1), smooth)  # α checked before the long pass
    stats = collect_inputs(model, calibration)
    if smooth == "search":
        factors, choices = search_smoothing(model, calibration, observer, stats=stats)
    else:
        factors = fixed_factors(model, stats, smooth) if smooth is not None else {}
        choices = group_choices(model, stats, factors, observer, smooth)
    plan = W8A8Plan(factors, [], choices, smooth)
    chosen = most_sensitive(choices, keep_float)
    plan.keep_float = chosen + [name for name in float_layers if name not in chosen]
    plan.outliers = outlier_channels(stats, factors, outliers, skip=plan.keep_float)
    return plan


def quantize_static(
    model: nn.Module,
    calibration: torch.Tensor,
    observer: str = "histogram-mse",
    symmetric: bool = False,
    smooth: float | str | None = None,
    keep_float: int = 0,
    plan: W8A8Plan | None = None,
) -> nn.Module:
    plan = plan or plan_w8a8(model, calibration, smooth, observer, keep_float)
    divisors = {n: plan.divisor(n, m.in_features) for n, m in linear_targets(model)}
    divisors = {n: d for n, d in divisors.items() if d is not None}
    observers = prepare_static(model, observer, symmetric, divisors, plan.keep_float)
    calibrate(model, calibration)
    return convert_static(model, observers, plan.factors, plan.outliers)


def gptq_w8a8_maker(plan: W8A8Plan, asymmetric: bool = False, input_group_size=None):
    """make(name, linear, H) for quantize_gptq: the W8A8 layer with GPTQ-chosen int8 codes on
    the smoothed weight (w · s) against the Hessian of the smoothed inputs (x / s):
    H' = diag(1/s) H diag(1/s), whose rows and columns at float outlier channels are zero (those
    inputs never reach the int8 product). None for a linear the plan keeps float."""
    from llmlab.quant.gptq import gptq_quantize_int8

    def make(name, linear, hessian):
        if name in plan.keep_float:
            return None
        s = plan.factors.get(name)
        weight = linear.weight.detach().float()
        if s is not None:
            weight = weight * s[None, :]
            inverse = 1 / s.double()
            hessian = hessian * inverse[:, None] * inverse[None, :]
        weight, split = _float_outliers(linear, weight, plan.outliers.get(name))
        if split:
            hessian = hessian.clone()
            hessian[split["outlier_index"]] = 0
            hessian[:, split["outlier_index"]] = 0
        codes, scale = gptq_quantize_int8(weight, hessian)
        return W8A8Linear(
            codes, scale, linear.bias, smooth=s, asymmetric=asymmetric,
            input_group_size=input_group_size, **split,
        )  # fmt: skip

    return make


@torch.no_grad()
def quantize_dynamic(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    smooth: float | str | None = None,
    keep_float: int = 0,
    plan: W8A8Plan | None = None,
    weights: str = "rtn",
    asymmetric: bool = False,
    input_group_size: int | None = None,
) -> nn.Module:
    """Dynamic W8A8. weights: "rtn" (int8 codes rounded to nearest) or "gptq" (chosen with
    GPTQ's error feedback, layer by layer on the calibration ids: needs them). asymmetric:
    activations over each token's [min, max] instead of ±max |x|. input_group_size: one grid
    per run of that many input channels of a token (W8A8Linear)."""
    grid = PER_TOKEN_ASYMMETRIC if asymmetric else None
    if input_group_size is not None:
        if input_group_size <= 0:
            raise LlmlabError(f"--activation-group-size must be positive, got {input_group_size}")
        for name, linear in linear_targets(model):
            if linear.in_features % input_group_size:
                raise LlmlabError(
                    f"--activation-group-size {input_group_size} does not divide the "
                    f"{linear.in_features} inputs of {name}"
                )
    plan = plan or plan_w8a8(model, calibration, smooth, grid, keep_float)
    if weights == "gptq":
        from llmlab.quant.gptq import quantize_gptq

        if calibration is None:
            raise LlmlabError("GPTQ weights need calibration text")
        quantize_gptq(model, calibration, make=gptq_w8a8_maker(plan, asymmetric, input_group_size))
        return model
    if weights != "rtn":
        raise LlmlabError(f"W8A8 weights must be rtn or gptq, got '{weights}'")
    for name, linear in linear_targets(model):
        if name not in plan.keep_float:
            layer = _w8a8(
                linear,
                smooth=plan.factors.get(name),
                asymmetric=asymmetric,
                outliers=plan.outliers.get(name),
                input_group_size=input_group_size,
            )
            replace_module(model, name, layer)
    untie_head(model)
    return model
