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

import torch
from torch import nn

from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.observers import MinMaxObserver, Observer, make_observer
from llmlab.quant.rtn import linear_targets, replace_module, untie_head


def weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [out, in] int8, scale [out]) per output channel, symmetric."""
    observer = MinMaxObserver(8, symmetric=True, axis=0)
    observer(weight)
    scale, _ = observer.qparams()
    codes = (weight.detach().float() / scale[:, None]).round().clamp(-127, 127)
    return codes.to(torch.int8), scale


def _w8a8(linear: nn.Linear, input_scale=None, input_zero_point=None, smooth=None) -> W8A8Linear:
    weight = linear.weight.detach().float()
    if smooth is not None:
        weight = weight * smooth[None, :]
    codes, scale = weight_int8(weight)
    return W8A8Linear(codes, scale, linear.bias, input_scale, input_zero_point, smooth)


@torch.no_grad()
def smoothing_factors(
    model: nn.Module, calibration: torch.Tensor, alpha: float = 0.5, batch_size: int = 4
) -> dict[str, torch.Tensor]:
    """{linear name: s [in]}. Linears called one after another on the same input tensor (q/k/v,
    gate/up) form one group and get one s, so the engine can still fuse them."""
    if not 0 <= alpha <= 1:
        from llmlab.errors import LlmlabError

        raise LlmlabError(f"--smooth must be between 0 and 1, got {alpha}")
    targets = dict(linear_targets(model))
    act_max = {name: None for name in targets}
    calls: list[tuple[str, int]] = []  # (name, id of its input) in call order, first batch only

    def hook(name):
        def record(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).abs().amax(0)
            act_max[name] = x if act_max[name] is None else torch.maximum(act_max[name], x)
            if first_batch:
                calls.append((name, id(args[0])))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets.items()]
    try:
        for start in range(0, len(calibration), batch_size):
            first_batch = start == 0
            model(calibration[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    for i, (name, input_id) in enumerate(calls):
        if i and input_id == calls[i - 1][1] and name not in groups[-1]:
            groups[-1].append(name)
        elif not any(name in g for g in groups):
            groups.append([name])
    factors = {}
    for group in groups:
        act = torch.stack([act_max[n] for n in group]).amax(0)
        weight = torch.stack(
            [targets[n].weight.detach().float().abs().amax(0) for n in group]
        ).amax(0)
        s = (act.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        s = torch.where(act > 0, s, torch.ones_like(s))  # a channel never active: leave it
        factors.update({n: s for n in group})
    return factors


def prepare_static(
    model: nn.Module,
    observer: str = "histogram-mse",
    symmetric: bool = False,
    smooth: dict[str, torch.Tensor] | None = None,
) -> dict[str, tuple[Observer, object]]:
    """Attach an activation observer to every linear's input (divided by its smoothing factors
    when given, as the converted layer will see it); returns {name: (observer, hook)}."""
    observers = {}
    for name, linear in linear_targets(model):
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
def convert_static(model: nn.Module, observers: dict, smooth: dict | None = None) -> nn.Module:
    for name, (obs, handle) in observers.items():
        handle.remove()
        input_scale, input_zero_point = obs.qparams()
        layer = _w8a8(
            model.get_submodule(name), input_scale, input_zero_point, (smooth or {}).get(name)
        )
        replace_module(model, name, layer)
    untie_head(model)
    return model


def quantize_static(
    model: nn.Module,
    calibration: torch.Tensor,
    observer: str = "histogram-mse",
    symmetric: bool = False,
    smooth: float | None = None,
) -> nn.Module:
    factors = smoothing_factors(model, calibration, smooth) if smooth else None
    observers = prepare_static(model, observer, symmetric, factors)
    calibrate(model, calibration)
    return convert_static(model, observers, factors)


@torch.no_grad()
def quantize_dynamic(
    model: nn.Module, calibration: torch.Tensor | None = None, smooth: float | None = None
) -> nn.Module:
    factors = smoothing_factors(model, calibration, smooth) if smooth else {}
    for name, linear in linear_targets(model):
        replace_module(model, name, _w8a8(linear, smooth=factors.get(name)))
    untie_head(model)
    return model
