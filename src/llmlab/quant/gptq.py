"""GPTQ (Frantar et al., 2022) for int4 group-wise weight-only quantization.

    H = hessian_of(inputs)                                  # Σ x xᵀ over calibration tokens
    codes, scales, minimums = gptq_quantize(weight, H, group_size=64)
    model = quantize_gptq(model, calibration_ids, group_size=64)   # layer by layer, in place

Round-to-nearest picks each weight's closest code on its own. GPTQ quantizes one input column at a
time and spreads that column's rounding error over the columns not yet quantized, weighted by the
inverse Hessian of the layer's squared output error (H = 2 Xᵀ X over the calibration inputs), so
the *output* error on inputs like the calibration ones shrinks, not each weight's. The group's
grid (scale, minimum: the same asymmetric Q4_1 grid as RTN) is taken from the already-updated
weights when the group's first column comes up. Block updates (128 columns at a time, the
"lazy batch" of the paper) keep it to matrix products.

The model is calibrated layer by layer: the hidden states entering decoder layer i come from
layers 0…i−1 already quantized, so each layer corrects for the error before it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import Int4Linear
from llmlab.quant.rtn import group_size_for, int4_codes, int4_grid, replace_module, untie_head

log = logging.getLogger("llmlab.quant")


class HessianAccumulator:
    """Running H = 2/n · Σ x xᵀ over every token a linear layer sees (forward pre-hook)."""

    def __init__(self, in_features: int):
        self.h = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor):
        x = x.detach().reshape(-1, x.shape[-1]).double()
        n = x.shape[0]
        self.h.mul_(self.count / (self.count + n)).add_(x.T @ x, alpha=2 / (self.count + n))
        self.count += n

    def hook(self, module, args):
        self.add(args[0])


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    group_size: int,
    damp: float = 0.01,
    block: int = 128,
):
    """weight [out, in], hessian [in, in] → (codes uint8 [out, in], scales, minimums [out, in/g])."""
    w = weight.detach().float().clone()
    rows, cols = w.shape
    if cols % group_size:
        raise LlmlabError(f"group size {group_size} does not divide {cols} inputs")
    h_inv = _inverse_hessian_factor(w, hessian, damp)
    block = max(group_size, block - block % group_size)
    codes = torch.zeros(rows, cols, dtype=torch.uint8)
    scales = torch.zeros(rows, cols // group_size)
    minimums = torch.zeros(rows, cols // group_size)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, h1 = w[:, start:end].clone(), h_inv[start:end, start:end]
        errors = torch.zeros_like(w1)
        for i in range(end - start):
            col = start + i
            if col % group_size == 0:
                g = col // group_size
                s, m = int4_grid(w1[:, i : i + group_size])
                scales[:, g], minimums[:, g] = s, m
            q = int4_codes(w1[:, i], s, m)
            codes[:, col] = q.to(torch.uint8)
            err = (w1[:, i] - (q * s + m)) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            errors[:, i] = err
        w[:, end:] -= errors @ h_inv[start:end, end:]
    return codes, scales, minimums


def _inverse_hessian_factor(w: torch.Tensor, hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹ (dampened); zeroes w's columns for inputs that were always
    0 (in place: their weights do not matter)."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(damp * h.diagonal().mean())
    try:
        h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError:
        raise LlmlabError(
            "GPTQ: the calibration Hessian is not positive definite (raise damp)"
        ) from None
    return h_inv.float()  # float64 for the factorization, the updates in float32


def gptq_quantize_int8(
    weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01, block: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in], hessian [in, in] → (codes int8 [out, in], scale [out]): the per-row
    symmetric int8 grid of W8A8 (scale = max |row| / 127, fixed up front), with GPTQ's error
    feedback choosing the codes."""
    w = weight.detach().float().clone()
    rows, cols = w.shape
    scale = (w.abs().amax(1) / 127).clamp(min=1e-12)
    h_inv = _inverse_hessian_factor(w, hessian, damp)
    codes = torch.zeros(rows, cols)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, h1 = w[:, start:end].clone(), h_inv[start:end, start:end]
        errors = torch.zeros_like(w1)
        for i in range(end - start):
            q = (w1[:, i] / scale).round().clamp(-127, 127)
            codes[:, start + i] = q
            err = (w1[:, i] - q * scale) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            errors[:, i] = err
        w[:, end:] -= errors @ h_inv[start:end, end:]
    return codes.to(torch.int8), scale


def _decoder(model):
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "layer_inputs"):
        raise LlmlabError("GPTQ needs a decoder model (llmlab Llama family or Gemma 3)")
    return inner


def int4_maker(group_size: int):
    """make(name, linear, H) for int4 weight-only GPTQ."""

    def make(name, linear, hessian):
        g = group_size_for(linear.in_features, group_size)
        codes, scales, minimums = gptq_quantize(linear.weight, hessian, g)
        return Int4Linear(codes, scales, minimums, g, linear.bias)

    return make


def _quantize_linears(model, names: list[str], hessians: dict, make, full: dict):
    for name in names:
        linear = model.get_submodule(name)
        layer = make(full[id(linear)], linear, hessians[name].h)
        if layer is not None:  # None: the linear stays as it is (mixed precision)
            replace_module(model, name, layer)


@torch.no_grad()
def quantize_gptq(
    model: nn.Module,
    calibration: torch.Tensor,
    group_size: int = 32,
    batch_size: int = 4,
    make=None,
) -> nn.Module:
    """calibration [n, seq] token ids. Each decoder layer: collect H for its linears from the
    hidden states the (already quantized) layers below produce, quantize it, run it again to make
    the next layer's inputs. The LM head last, on the final norm's outputs. `make(full name,
    linear, H)` builds each quantized layer (default: int4 groups of `group_size`; ptq.py passes
    one that builds W8A8 layers)."""
    make = make or int4_maker(group_size)
    full = {id(m): n for n, m in model.named_modules()}
    inner = _decoder(model)
    # Each layer gets what the model's own forward gives it (Gemma 3: scaled embedding, local or
    # global rotary and mask per layer), so the Hessians are of the inputs the model really sees.
    per_layer = inner.layer_inputs(0, calibration.shape[1])
    batches = [calibration[i : i + batch_size] for i in range(0, len(calibration), batch_size)]
    hidden = [inner.embed(b) for b in batches]
    for index, (layer, (cos, sin, mask)) in enumerate(zip(inner.layers, per_layer)):
        names = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
        hessians = {n: HessianAccumulator(layer.get_submodule(n).in_features) for n in names}
        handles = [
            layer.get_submodule(n).register_forward_pre_hook(hessians[n].hook) for n in names
        ]
        for x in hidden:
            layer(x, cos, sin, mask, None)
        for handle in handles:
            handle.remove()
        _quantize_linears(layer, names, hessians, make, full)
        hidden = [layer(x, cos, sin, mask, None) for x in hidden]
        log.info("GPTQ: layer %d/%d quantized", index + 1, len(inner.layers))
    head = HessianAccumulator(model.lm_head.in_features)
    for x in hidden:
        head.add(inner.norm(x))
    _quantize_linears(model, ["lm_head"], {"lm_head": head}, make, full)
    untie_head(model)
    return model
