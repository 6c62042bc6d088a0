"""Single-stream decode of an int4 or W8A8 Llama or Gemma 3 through one native call per layer.

When every packed projection of every layer is an int4 layer on llmlab's kernel (`llmlab quantize
--method rtn|gptq --bits 4` folders, `LLM(..., quant="int4")`, Q4 GGUF files) or a dynamic
per-token W8A8 layer on llmlab's VNNI kernel (`--method dynamic`, `quant="w8a8"`; without
activation groups or float outlier channels), and the model runs in float32 on the CPU, a decode
step of one sequence calls `native.decode_layer` once per layer (nn/csrc/decode_layer.cpp: norm,
q/k/v, rotary, cache write, attention, o, norm, gate/up, SiLU, down; Gemma 3's QK-norm, extra
norms and GeGLU too, its sliding-window layers given the window's slots) instead of PyTorch's
~15–20 ops. At one token those ops' dispatch and allocation cost about as much as the quantized
products themselves, and torch.compile's fused loops still pay a Python wrapper and guards per
step; bench/engine.py measures the rows.

Everything else — batches, prefill chunks, Llama-family sliding windows, other weight kinds —
takes the runner's op-by-op path, whose results this matches up to float rounding in rotary,
softmax and SiLU (tests/test_native_decode.py).
"""

from __future__ import annotations

import torch

from llmlab.engine.packed_weights import PackedWeights, gemma_norm_weight, pair_rotary_order
from llmlab.nn import native
from llmlab.nn.quantized_linear import Int4Linear, W8A8Linear

_EMPTY = torch.empty(0)  # an unused optional weight (decode_layer's convention)


def _projection_args(projection) -> tuple[int, list[torch.Tensor], int] | None:
    """(kind, weights, option) of decode_layer for a packed projection, or None if it has none."""
    layer = projection.quantized
    if projection.bias is not None or getattr(layer, "bias", None) is not None:
        return None
    if isinstance(layer, Int4Linear) and layer.kernel == "native":
        return 0, [layer.tiles, layer.scale_min], layer.group_size
    if (
        isinstance(layer, W8A8Linear)
        and layer.vnni_fits()
        and not (layer.input_group_size or layer.has_outliers)
    ):
        packed, compensation, _ = layer.vnni_weight()
        sums = layer.weight_sums if layer.asymmetric else _EMPTY
        divisor = layer.quant_divisor if layer.quant_divisor is not None else _EMPTY
        return 1, [packed, compensation, layer.weight_scale, sums, divisor], int(layer.asymmetric)
    return None


def _norm_weights(module, gemma: bool) -> list[torch.Tensor] | None:
    """The layer's RMSNorm weights as decode_layer takes them (Gemma 3's as 1 + w, q/k in
    rotary-pair order), or None if their dtypes or epsilons do not fit it."""
    if not gemma:
        norms = [module.input_layernorm, module.post_attention_layernorm]
    else:
        attn = module.self_attn
        norms = [module.input_layernorm, attn.q_norm, attn.k_norm]
        norms += [module.post_attention_layernorm, module.pre_feedforward_layernorm]
        norms.append(module.post_feedforward_layernorm)
    if any(n.weight.dtype != torch.float32 or n.eps != norms[0].eps for n in norms):
        return None
    if not gemma:
        return [n.weight for n in norms]
    order = pair_rotary_order(1, norms[1].weight.shape[0])  # QK-norms: q/k rows' order
    return [gemma_norm_weight(n, order if i in (1, 2) else None) for i, n in enumerate(norms)]


class NativeDecode:
    """Per-layer arguments of decode_layer (norm weights, eps, the four projections' weights,
    kinds and options) and sliding windows, gathered once per packing."""

    def __init__(self, layers: list[tuple], windows: list, heads: int, kv_heads: int, scale: float):
        self.layers, self.windows = layers, windows
        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale

    @classmethod
    def build(cls, model, packed: PackedWeights | None, scale: float) -> NativeDecode | None:
        """A NativeDecode for this model and packing, or None where it does not apply."""
        c = model.config
        gemma = getattr(c, "layer_types", None) is not None
        if (
            packed is None
            or (c.sliding_window is not None and not gemma)  # a Llama-family window: masks
            or model.model.embed_tokens.weight.dtype != torch.float32
            or model.model.embed_tokens.weight.device.type != "cpu"
            or not native.available()
        ):
            return None
        layers, windows = [], []
        for i, (module, layer) in enumerate(zip(model.model.layers, packed.layers)):
            args = [_projection_args(p) for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
            norms = _norm_weights(module, gemma)
            if None in args or norms is None:
                return None
            weights = [w for _, ws, _ in args for w in ws]
            kinds, options = [a[0] for a in args], [a[2] for a in args]
            eps = module.input_layernorm.eps
            layers.append((norms, eps, weights, kinds, options))
            windows.append(c.sliding_window if gemma and c.is_sliding(i) else None)
        return cls(layers, windows, c.num_attention_heads, c.num_key_value_heads, scale)

    def __call__(self, x: torch.Tensor, kv_cache: list[torch.Tensor], tables: dict, inputs) -> None:
        """Run every layer for the one decode row of `inputs` (a StepInputs), x [1, hidden] in
        place; tables: {is a sliding-window layer: (cos, sin)} of this position."""
        tables = {local: (cos.reshape(-1), sin.reshape(-1)) for local, (cos, sin) in tables.items()}
        slot, context = int(inputs.slot_mapping[0]), inputs.decode_slots[0]
        for cache, layer, window in zip(kv_cache, self.layers, self.windows):
            cos, sin = tables[window is not None]
            slots = context if window is None else context[-window:]
            native.decode_layer(
                x, cache, *layer, cos, sin, slot, slots, self.heads, self.kv_heads, self.scale
            )
