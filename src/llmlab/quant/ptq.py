"""Post-training W8A8: static (calibrated activation scales) and dynamic (per-token at run time).

    observers = prepare_static(model, observer="histogram-mse")   # 1. observers on every linear's input
    calibrate(model, calibration_ids)                              # 2. run calibration batches
    convert_static(model, observers)                               # 3. freeze scales → W8A8Linear
    quantize_dynamic(model)                                        # int8 weights now, activations later

Static: each linear's input gets an observer (a forward pre-hook); after calibration its
(scale, zero point) is frozen into the layer, one per layer for all tokens — no work at run
time, but a token whose activations fall outside the calibrated range is clipped. Dynamic: only
the weights are quantized offline; each token's activations get their own scale when they arrive
(max |x| / 127), so nothing is clipped, at the cost of one reduction per token and layer.
Weights are int8 per output channel (symmetric, from a per-channel min-max observer) in both.
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.nn.quantized_linear import W8A8Linear
from llmlab.quant.observers import MinMaxObserver, Observer, make_observer
from llmlab.quant.rtn import linear_targets, replace_module, untie_head


def weight_int8(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [out, in] int8, scale [out]) per output channel, symmetric."""
    observer = MinMaxObserver(8, symmetric=True, axis=0)
    observer(linear.weight)
    scale, _ = observer.qparams()
    codes = (linear.weight.detach().float() / scale[:, None]).round().clamp(-127, 127)
    return codes.to(torch.int8), scale


def prepare_static(
    model: nn.Module, observer: str = "histogram-mse", symmetric: bool = False
) -> dict[str, tuple[Observer, object]]:
    """Attach an activation observer to every linear's input; returns {name: (observer, hook)}."""
    observers = {}
    for name, linear in linear_targets(model):
        obs = make_observer(observer, bits=8, symmetric=symmetric)
        handle = linear.register_forward_pre_hook(lambda module, args, obs=obs: obs(args[0]))
        observers[name] = (obs, handle)
    return observers


@torch.no_grad()
def calibrate(model: nn.Module, calibration: torch.Tensor, batch_size: int = 4):
    """Run the calibration token ids [n, seq] through the model (observers record)."""
    for start in range(0, len(calibration), batch_size):
        model(calibration[start : start + batch_size])


@torch.no_grad()
def convert_static(model: nn.Module, observers: dict) -> nn.Module:
    for name, (obs, handle) in observers.items():
        handle.remove()
        linear = model.get_submodule(name)
        input_scale, input_zero_point = obs.qparams()
        codes, scale = weight_int8(linear)
        replace_module(
            model, name, W8A8Linear(codes, scale, linear.bias, input_scale, input_zero_point)
        )
    untie_head(model)
    return model


def quantize_static(
    model: nn.Module, calibration: torch.Tensor, observer: str = "histogram-mse", symmetric=False
) -> nn.Module:
    observers = prepare_static(model, observer, symmetric)
    calibrate(model, calibration)
    return convert_static(model, observers)


@torch.no_grad()
def quantize_dynamic(model: nn.Module) -> nn.Module:
    for name, linear in linear_targets(model):
        codes, scale = weight_int8(linear)
        replace_module(model, name, W8A8Linear(codes, scale, linear.bias))
    untie_head(model)
    return model
