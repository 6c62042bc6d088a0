"""Round-to-nearest (RTN): the baseline every calibrated method is compared with.

    codes, scales, minimums = int4_group_params(weight, group_size=64)   # w ≈ codes · scale + min
    model = quantize_rtn(model, bits=4, group_size=64)                   # every linear, in place

int4: per group of `group_size` inputs of a row, asymmetric over the group's [min, max]
(llama.cpp's Q4_1 grid), scale and minimum rounded to float16 first — the form they are stored in
— so the codes are chosen for the grid that is saved. int8: per output row, symmetric, from a
per-channel min-max observer.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from llmlab.errors import LlmlabError
from llmlab.nn.quantized_linear import Int4Linear, Int8Linear

log = logging.getLogger("llmlab.quant")
INT4_GROUPS = (256, 128, 64, 32)  # what the packed int4 kernel accepts


def group_size_for(in_features: int, requested: int) -> int:
    """The requested group if it divides the layer's inputs, else the largest smaller one that does
    (SmolLM2's 576-wide inputs take 64 when 128 is asked for)."""
    if requested not in INT4_GROUPS:
        raise LlmlabError(f"int4 group size must be one of 32, 64, 128, 256, got {requested}")
    for g in INT4_GROUPS:
        if g <= requested and in_features % g == 0:
            return g
    raise LlmlabError(f"no int4 group size divides a layer with {in_features} inputs")


def levels_for(bits: int) -> int:
    """The largest code of a `bits`-bit grid (4 → 15). 3 and 2 bits use the int4 layout and
    kernel with fewer codes (no smaller file: a way to study what fewer levels cost)."""
    if bits not in (4, 3, 2):
        raise LlmlabError(f"group-wise bits must be 4, 3 or 2, got {bits}")
    return 2**bits - 1


def int4_grid(groups: torch.Tensor, levels: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    """groups [..., g] → (scale, minimum) [...] as float16-representable float32."""
    low, high = groups.amin(-1), groups.amax(-1)
    minimums = low.half().float()
    scales = ((high - minimums) / levels).clamp(min=1e-6).half().float()
    return scales, minimums


def int4_codes(
    values: torch.Tensor, scales: torch.Tensor, minimums: torch.Tensor, levels: int = 15
) -> torch.Tensor:
    return ((values - minimums) / scales).round().clamp(0, levels)


def int4_group_params(weight: torch.Tensor, group_size: int, levels: int = 15):
    """weight [out, in] → codes [out, in] uint8 (0…levels), scales and minimums
    [out, in / group_size]."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)
    scales, minimums = int4_grid(groups, levels)
    codes = int4_codes(groups, scales[..., None], minimums[..., None], levels)
    return codes.reshape(out_features, in_features).to(torch.uint8), scales, minimums


def rtn_linear(linear: nn.Linear, bits: int, group_size: int = 32) -> nn.Module:
    if bits == 8:
        from llmlab.quant.observers import MinMaxObserver

        observer = MinMaxObserver(8, symmetric=True, axis=0)
        observer(linear.weight)
        scales, _ = observer.qparams()
        q = (linear.weight.detach().float() / scales[:, None]).round().clamp(-127, 127)
        return Int8Linear(q, scales, linear.bias)
    if bits in (4, 3, 2):
        g = group_size_for(linear.in_features, group_size)
        codes, scales, minimums = int4_group_params(linear.weight.detach(), g, levels_for(bits))
        return Int4Linear(codes, scales, minimums, g, linear.bias)
    raise LlmlabError(f"--bits must be 8, 4, 3 or 2, got {bits}")


def linear_targets(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear to quantize (the LM head included; embeddings are looked up, not multiplied)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def replace_module(model: nn.Module, name: str, module: nn.Module):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def untie_head(model: nn.Module):
    """A tied LM head gets quantized on its own: record it untied in the config."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False


@torch.no_grad()
def quantize_rtn(model: nn.Module, bits: int = 4, group_size: int = 32) -> nn.Module:
    for name, linear in linear_targets(model):
        replace_module(model, name, rtn_linear(linear, bits, group_size))
    untie_head(model)
    return model
