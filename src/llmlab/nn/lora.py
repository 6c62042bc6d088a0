"""LoRA: train a low-rank update B·A beside frozen weights, as the notes walk through it.

    add_lora(model, r=8, alpha=16)                 # freeze the model, wrap q/k/v/o projections
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-3)   # only A and B train
    set_adapter(model, "other")                   # after llmlab.adapters.load_adapter(model, DIR, "other")
    with adapters_disabled(model): ...            # the base model, e.g. DPO's reference
    merge_lora(model); unmerge_lora(model)        # W += B·A·scaling, and back
    merge_and_unload(model)                       # plain nn.Linear again, ready for save_hf_folder

A wrapped layer computes  y = x·Wᵀ + b + Σ_active dropout(x)·Aᵀ·Bᵀ·scaling  with A [r, in] drawn
kaiming-uniform and B [out, r] zero, so training starts exactly at the base model. scaling is
alpha/r (or alpha/√r with rsLoRA, which keeps the update's size steady as r grows). The wrapper
is an nn.Linear subclass that keeps the original `weight`/`bias` parameters under their original
names, so the base state dict (and `save_hf_folder`) see the same keys as before.

The frozen base may be held in bf16 (`base_dtype="bf16"`: the whole frozen model, which then
computes in bf16) or int8 (`"int8"`: the wrapped layers, per-row absmax) to save memory; the
adapters stay float32 (cast to the activations' dtype per use). The PEFT format itself lives in
`llmlab/formats/peft.py`; saving and loading adapters (PEFT folders) in `llmlab/adapters.py`.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.errors import LlmlabError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoraError(LlmlabError):
    pass


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list | str = field(
        default_factory=lambda: list(DEFAULT_TARGETS)
    )  # names, regex or "all-linear"
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def __post_init__(self):
        if self.r < 1:
            raise LoraError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise LoraError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def matches_target(name: str, targets, module: nn.Module) -> bool:
    """PEFT's rule: a list matches a module whose path equals or ends with `.<entry>`; a string is
    a full-match regex; "all-linear" is every Linear except the output head."""
    if targets == "all-linear":
        return not name.endswith("lm_head")
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


class LoraLinear(nn.Linear):
    """An nn.Linear with named LoRA adapters beside its (frozen) weight."""

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = (
            base.weight,
            base.bias,
        )  # same Parameters: no copy, same state-dict keys
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active: list[str] = []
        self.merged: list[str] = []  # adapters whose update is currently inside `weight`
        self.disabled = False
        self.int8_scale = None  # per-row scales when the base is held in int8

    def add_adapter(self, name: str, config: LoraConfig):
        if name in self.lora_A:
            raise LoraError(f"adapter '{name}' already exists")
        device = self.weight.device
        self.lora_A[name] = nn.Linear(self.in_features, config.r, bias=False, device=device)
        self.lora_B[name] = nn.Linear(config.r, self.out_features, bias=False, device=device)
        nn.init.kaiming_uniform_(self.lora_A[name].weight, a=math.sqrt(5))  # nn.Linear's own init
        nn.init.zeros_(self.lora_B[name].weight)
        self.lora_dropout[name] = (
            nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        )
        self.scaling[name] = config.scaling
        if not self.active:
            self.active = [name]

    def lora_parameters(self, names: list[str] | None = None):
        for name in names or list(self.lora_A):
            yield self.lora_A[name].weight
            yield self.lora_B[name].weight

    def delta_weight(self, name: str) -> torch.Tensor:
        return (self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling[name]

    def base_weight(self) -> torch.Tensor:
        if self.int8_scale is not None:
            return self.weight.float() * self.int8_scale
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.disabled and self.merged:
            self.unmerge()
        weight = self.base_weight()
        if weight.dtype == x.dtype or torch.is_autocast_enabled(x.device.type):
            out = F.linear(x, weight, self.bias)  # autocast picks the compute dtype itself
        else:  # e.g. a bf16/int8-held layer inside an fp32 model
            bias = self.bias.to(weight.dtype) if self.bias is not None else None
            out = F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
        if self.disabled:
            return out
        for name in self.active:
            if name not in self.merged:
                out = self._add_update(out, x, name)
        return out

    def _add_update(self, out: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
        """out + dropout(x)·Aᵀ·(B·scaling)ᵀ, the second product fused into the add (one addmm).

        Runs in the activations' dtype (the fp32 A/B are cast: tiny), so a bf16 model stays bf16;
        scaling goes onto B ([out, r]) rather than onto the [tokens, out] result."""
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        dropout = self.lora_dropout[name]
        h = x if isinstance(dropout, nn.Identity) else dropout(x)
        if a.dtype != out.dtype:
            a, b, h = a.to(out.dtype), b.to(out.dtype), h.to(out.dtype)
        low = F.linear(h, a).reshape(-1, a.shape[0])
        flat = torch.addmm(out.reshape(-1, out.shape[-1]), low, (b * self.scaling[name]).t())
        return flat.view(out.shape)

    def _require_float_base(self, what: str):
        if self.int8_scale is not None:
            raise LoraError(f"cannot {what} an adapter into an int8 base weight")

    @torch.no_grad()
    def merge(self, names: list[str] | None = None):
        self._require_float_base("merge")
        for name in names or self.active:
            if name not in self.merged:
                self.weight += self.delta_weight(name).to(self.weight.dtype)
                self.merged.append(name)

    @torch.no_grad()
    def unmerge(self):
        for name in reversed(self.merged):
            self.weight -= self.delta_weight(name).to(self.weight.dtype)
        self.merged = []

    def hold_base_in(self, dtype: str):
        """Store the frozen weight as bf16 or int8 (per output row absmax) to save memory."""
        self._require_float_base("convert")
        if self.merged:
            raise LoraError("unmerge adapters before changing the base dtype")
        if dtype == "bf16":
            self.weight = nn.Parameter(self.weight.detach().to(torch.bfloat16), requires_grad=False)
        elif dtype == "int8":
            w = self.weight.detach().float()
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            self.weight = nn.Parameter(torch.round(w / scale).to(torch.int8), requires_grad=False)
            self.int8_scale = scale
        elif dtype not in ("fp32", "float32", None):
            raise LoraError(f"base_dtype must be fp32, bf16 or int8, got {dtype}")


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def _layers_or_fail(model: nn.Module) -> dict[str, LoraLinear]:
    layers = lora_layers(model)
    if not layers:
        raise LoraError(
            "the model has no LoRA adapters (call add_lora or llmlab.adapters.load_adapter first)"
        )
    return layers


def add_lora(
    model: nn.Module,
    config: LoraConfig | None = None,
    adapter_name: str = "default",
    base_dtype: str | None = None,
    **options,
) -> nn.Module:
    """Freeze every base parameter and add adapter `adapter_name` to each targeted Linear.

    `options` are LoraConfig fields (r, alpha, dropout, target_modules, use_rslora). Calling it
    again with a new name adds a second adapter to the same layers."""
    config = config or LoraConfig(**options)
    existing = {id(p) for layer in lora_layers(model).values() for p in layer.lora_parameters()}
    for p in model.parameters():
        if id(p) not in existing:
            p.requires_grad_(False)
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and not _is_adapter_part(name)
        and matches_target(name, config.target_modules, m)
    ]
    if not targets:
        raise LoraError(f"no Linear module matches target_modules={config.target_modules!r}")
    for name, module in targets:
        if not isinstance(module, LoraLinear):
            wrapped = LoraLinear(module)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped)
            if base_dtype and base_dtype not in BF16_NAMES:
                wrapped.hold_base_in(base_dtype)
            module = wrapped
        module.add_adapter(adapter_name, config)
    if base_dtype in BF16_NAMES:
        hold_frozen_in_bf16(model)
    configs = getattr(model, "lora_configs", {})
    configs[adapter_name] = config
    model.lora_configs = configs
    return model


BF16_NAMES = ("bf16", "bfloat16")


def hold_frozen_in_bf16(model: nn.Module) -> nn.Module:
    """Cast every floating parameter but the adapters (all of the frozen base: embeddings, projections, norms) to bf16.

    The model then computes in bf16 end to end (the adapters' fp32 A/B are cast per use and keep
    fp32 master copies and gradients), which halves weight and activation memory and runs the
    matmuls on the CPU's bf16 kernels. Buffers (rotary frequencies) stay fp32. The Parameter
    objects are kept, so tied weights stay tied."""
    adapters = {id(p) for layer in lora_layers(model).values() for p in layer.lora_parameters()}
    for p in model.parameters():
        if id(p) not in adapters and p.is_floating_point() and p.dtype != torch.bfloat16:
            p.data = p.data.to(torch.bfloat16)
    return model


def _is_adapter_part(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_parameters(model: nn.Module, adapter_name: str | None = None) -> list[nn.Parameter]:
    """The A and B matrices (of one adapter, or all): what the optimizer should see."""
    names = [adapter_name] if adapter_name else None
    return [p for layer in _layers_or_fail(model).values() for p in layer.lora_parameters(names)]


def set_adapter(model: nn.Module, names: str | list[str], trainable: bool = True):
    """Make these adapters the active ones (their updates are summed); only they train."""
    names = [names] if isinstance(names, str) else list(names)
    layers = _layers_or_fail(model).values()
    known = {n for layer in layers for n in layer.lora_A}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LoraError(f"unknown adapter {unknown[0]!r} (have: {', '.join(sorted(known))})")
    for layer in layers:
        if layer.merged:
            layer.unmerge()
        layer.active = [n for n in names if n in layer.lora_A]  # an adapter may target fewer layers
        for name in layer.lora_A:
            for p in layer.lora_parameters([name]):
                p.requires_grad_(trainable and name in names)


def delete_adapter(model: nn.Module, name: str):
    for layer in _layers_or_fail(model).values():
        if name in layer.merged:
            layer.unmerge()
        for table in (layer.lora_A, layer.lora_B, layer.lora_dropout):
            table.pop(name, None)
        layer.scaling.pop(name, None)
        layer.active = [n for n in layer.active if n != name]
    getattr(model, "lora_configs", {}).pop(name, None)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """Run the base model (merged adapters are unmerged first), e.g. for DPO/PPO reference log-probs."""
    layers = _layers_or_fail(model).values()
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.disabled = False


def merge_lora(model: nn.Module):
    """W += B·A·scaling for every active adapter; forward then costs the same as the base."""
    for layer in _layers_or_fail(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module):
    """Subtract the merged updates again: W is back to the base weight (to float rounding)."""
    for layer in _layers_or_fail(model).values():
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the active adapters and put plain nn.Linear layers back (no LoRA keys in state_dict)."""
    for name, layer in _layers_or_fail(model).items():
        layer.merge()
        plain = nn.Linear(
            layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta"
        )
        plain.weight, plain.bias = layer.weight, layer.bias
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
    for p in model.parameters():
        p.requires_grad_(True)
    model.lora_configs = {}
    return model
