"""The engine's own copy of the model's projection weights, laid out for fast decoding on CPU.

Per decoder layer, projections that read the same input become one matmul — q/k/v → `qkv`,
gate/up → `gate_up` — and the output projections (`o`, `down`) and the LM head are kept alone.
Why, measured on the 2-core dev machine (SmolLM2-135M shapes, fp32, one token):

- float weights are stored transposed ([in, out], contiguous) and multiplied as `x @ w_t`: MKL's
  matrix-vector kernel streams short rows ([out, in] with in = 576) at ~8 GB/s but long ones at
  ~20 GB/s; on the 49152×576 LM head that is 14 ms → 5 ms per token. From WIDE_BATCH rows on
  (batched decode, prefill) the GEMM is faster on the model's own [out, in] weights, so those are
  used there, projection by projection;
- fusing q/k/v and gate/up halves the kernel calls and streams longer matrices;
- int4/int8 layers are concatenated into one packed layer of the same kind (the packed kernels'
  cost is mostly per call at one token).

Query/key rows are also reordered within each head so that rotary pairs (i, i + d/2) sit next to
each other: rotary embedding becomes one complex multiply in place (`rotate_pairs_`). Q·K products
are unchanged because queries and cached keys share the order; values are not touched.

Anything else (LoRA-wrapped layers, fallback quantized layers, mixed kinds) is called module by
module and concatenated — correct, not fused. `fingerprint()` notices when the model's weights were
changed in place (an optimizer step, `load_state_dict`) or a module was swapped, so the runner
repacks before its next batch instead of serving old weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn.quantized_linear import KERNEL_DTYPE, Int4Linear, Int8Linear, W8A8Linear

# From this many rows on, float projections multiply the model's own [out, in] weights one by one
# (measured at 16 rows, fp32, one thread: a decode step 118 ms that way vs 126 ms with the
# transposed fused copy, whose advantage is at one or a few rows: 31 vs 45 ms per token).
WIDE_BATCH = 16


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(recurse=True), *module.buffers(recurse=True)]


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except (
        RuntimeError
    ):  # an inference-mode tensor has no version counter (and cannot be updated in place)
        return -1


class Fingerprint(NamedTuple):
    identities: tuple  # every module's and tensor's id: changes when one is swapped
    versions: tuple  # every tensor's in-place version counter: changes when one is updated


def fingerprint(model: nn.Module) -> Fingerprint:
    """Identity of every module and tensor, and each tensor's in-place version counter: changes when
    a weight is updated (optimizer step, load_state_dict) or a module is swapped (LoRA wrapping)."""
    tensors = _tensors(model)
    return Fingerprint(
        (*(id(m) for m in model.modules()), *(id(t) for t in tensors)),
        tuple(_version(t) for t in tensors),
    )


def pair_rotary_order(num_heads: int, head_dim: int) -> torch.Tensor:
    """Row order that interleaves each head's halves: [0, d/2, 1, d/2 + 1, …] per head."""
    half = head_dim // 2
    within = torch.stack([torch.arange(half), torch.arange(half) + half], -1).reshape(-1)
    return (torch.arange(num_heads)[:, None] * head_dim + within).reshape(-1)


def gemma_norm_weight(norm: nn.Module, order: torch.Tensor | None = None) -> torch.Tensor:
    """Gemma 3's RMSNorm multiplies by 1 + w: that vector in float32 (a copy), its entries in
    `order` (QK-norms follow the rotary-pair order of the packed q/k rows)."""
    weight = 1.0 + norm.weight.detach().float()
    return weight if order is None else weight[order]


def _int4_parts(layer: Int4Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer._codes().round().to(torch.uint8), layer.scales, layer.minimums


def _same_activation_grid(modules: list[W8A8Linear]) -> bool:
    """W8A8 layers can share one activation quantization: all dynamic (with the same symmetry),
    or one static grid, and one smoothing divisor and set of float outlier channels (or none)."""
    first = modules[0]

    def same(flag: str, tensor: str) -> bool:
        if any(getattr(m, flag) != getattr(first, flag) for m in modules):
            return False
        return not getattr(first, flag) or all(
            torch.equal(getattr(m, tensor), getattr(first, tensor)) for m in modules
        )

    if any(
        (m.asymmetric, m.input_group_size) != (first.asymmetric, first.input_group_size)
        for m in modules
    ) or not (same("smoothed", "input_divisor") and same("has_outliers", "outlier_index")):
        return False
    if not first.static:
        return not any(m.static for m in modules)
    return all(
        m.static
        and torch.equal(m.input_scale, first.input_scale)
        and torch.equal(m.input_zero_point, first.input_zero_point)
        for m in modules
    )


class FusedProjection:
    """Several projections of one input, as one matmul: y = concat(m(x) for m in modules)[:, order]."""

    def __init__(self, modules: list[nn.Module], order: torch.Tensor | None = None):
        self.modules = modules
        self.order = order
        self.weight_t = self.bias = self.quantized = None
        biases = [m.bias for m in modules]
        has_bias = any(b is not None for b in biases)
        kinds = {type(m) for m in modules}
        with torch.no_grad():
            if kinds == {nn.Linear}:
                weight = self._reorder(torch.cat([m.weight.detach() for m in modules]))
                self.weight_t = weight.t().contiguous()
            elif (
                kinds == {Int4Linear}
                and all(m.use_kernel for m in modules)
                and len({m.group_size for m in modules}) == 1
            ):
                codes, scales, minimums = (
                    self._reorder(torch.cat(p)) for p in zip(*map(_int4_parts, modules))
                )
                self.quantized = Int4Linear(
                    codes, scales, minimums, modules[0].group_size, use_kernel=True
                )
            elif kinds == {Int8Linear} and all(m.use_kernel for m in modules):
                qweight = self._reorder(torch.cat([m.qweight for m in modules]))
                scales = self._reorder(torch.cat([m.scales for m in modules]))
                self.quantized = Int8Linear(qweight, scales, use_kernel=True)
            elif kinds == {W8A8Linear} and _same_activation_grid(modules):
                # q/k/v (and gate/up) read one input: one activation quantization, one int8 matmul.
                first = modules[0]
                self.quantized = W8A8Linear(
                    self._reorder(torch.cat([m.qweight for m in modules])),
                    self._reorder(torch.cat([m.weight_scale for m in modules])),
                    input_scale=first.input_scale if first.static else None,
                    input_zero_point=first.input_zero_point if first.static else None,
                    smooth=first.input_divisor if first.smoothed else None,
                    asymmetric=first.asymmetric,
                    input_group_size=first.input_group_size,
                    outlier_index=first.outlier_index if first.has_outliers else None,
                    outlier_weight=self._reorder(torch.cat([m.outlier_weight for m in modules]))
                    if first.has_outliers
                    else None,
                )
            if (self.weight_t is not None or self.quantized is not None) and has_bias:
                parts = [
                    b.detach()
                    if b is not None
                    else torch.zeros(m.out_features, device=m.weight.device)
                    for m, b in zip(modules, biases)
                ]
                self.bias = self._reorder(torch.cat(parts))

    def _reorder(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.order is None else rows.index_select(0, self.order.to(rows.device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] → [T, out] in x's dtype."""
        return self.native(x).to(x.dtype)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """Like calling it, but a packed quantized kernel's result stays in its own dtype (bfloat16):
        a caller that adds it into the float residual (`add_` promotes exactly) skips a conversion."""
        if self.weight_t is not None:
            if (
                x.shape[0] >= WIDE_BATCH
            ):  # MKL's GEMM prefers the model's own [out, in] weights here
                return self._per_module(x, lambda m: F.linear(x, m.weight, m.bias))
            w = self.weight_t
            return torch.mm(x, w) if self.bias is None else torch.addmm(self.bias.to(x.dtype), x, w)
        if self.quantized is not None:
            if x.device.type != "cpu" or isinstance(self.quantized, W8A8Linear):
                out = self.quantized(x)
            else:
                out = self.quantized._kernel_matmul(x.to(KERNEL_DTYPE))
            return out if self.bias is None else out.add_(self.bias.to(out.dtype))
        return self._per_module(x, lambda m: m(x))

    def _per_module(self, x, call) -> torch.Tensor:
        out = (
            torch.cat([call(m) for m in self.modules], -1)
            if len(self.modules) > 1
            else call(self.modules[0])
        )
        return out if self.order is None else out.index_select(-1, self.order.to(out.device))


class PackedLayer:
    def __init__(self, layer: nn.Module, qk_order: torch.Tensor):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = FusedProjection([attn.q_proj, attn.k_proj, attn.v_proj], qk_order)
        self.o = FusedProjection([attn.o_proj])
        self.gate_up = FusedProjection([mlp.gate_proj, mlp.up_proj])
        self.down = FusedProjection([mlp.down_proj])


class PackedWeights:
    """Fused, reordered projections for every layer, plus the LM head (a copy: repack after the
    model's weights change, see ModelRunner.sync_weights)."""

    def __init__(self, model: nn.Module):
        c, inner = model.config, model.model
        q_order = pair_rotary_order(c.num_attention_heads, c.head_dim)
        k_order = (
            pair_rotary_order(c.num_key_value_heads, c.head_dim)
            + c.num_attention_heads * c.head_dim
        )
        kv_dim = c.num_key_value_heads * c.head_dim
        v_order = torch.arange(kv_dim) + c.num_attention_heads * c.head_dim + kv_dim
        qk_order = torch.cat([q_order, k_order, v_order])
        self.layers = [PackedLayer(layer, qk_order) for layer in inner.layers]
        self.head = FusedProjection([model.lm_head])


def rotate_pairs_(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotation: torch.Tensor | None = None
):
    """In place: rotate adjacent pairs of x [T, heads, head_dim] by angles given as cos, sin [T, 1, head_dim / 2]
    or, faster in eager mode, as the complex `rotation` = cos + i·sin (one multiply). Under torch.compile
    pass no `rotation`: Inductor has no complex kernels on CPU, and fuses the real form into one loop."""
    pairs = x.unflatten(-1, (-1, 2))
    if rotation is None:
        a, b = pairs[..., 0].float(), pairs[..., 1].float()
        pairs.copy_(torch.stack([a * cos - b * sin, a * sin + b * cos], -1))
    elif x.dtype in (torch.float32, torch.float64):
        torch.view_as_complex(pairs).mul_(rotation)
    else:  # no complex bfloat16/float16 on CPU: rotate in float32, round once (as the reference does)
        pairs.copy_(
            torch.view_as_real(torch.view_as_complex(pairs.float().contiguous()) * rotation)
        )
