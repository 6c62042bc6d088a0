"""Single-stream decode of an int4 Llama through one native call per layer.

When every packed projection of every layer is an int4 layer on llmlab's kernel (`llmlab quantize
--method rtn|gptq --bits 4` folders, `LLM(..., quant="int4")`, Q4 GGUF files) and the model runs in
float32 on the CPU, a decode step of one sequence calls `native.decode_layer_int4` once per layer
(nn/csrc/decode_layer.cpp: norm, q/k/v, rotary, cache write, attention, o, norm, gate/up, SiLU,
down) instead of PyTorch's ~15 ops. At one token those ops' dispatch and allocation cost about as
much as the int4 products themselves, and torch.compile's fused loops still pay a Python wrapper
and guards per step; bench/engine.py measures all three (`int4`, `int4+compile`).

Everything else — batches, prefill chunks, sliding windows, other weight kinds — takes the
runner's op-by-op path, whose results this matches up to float rounding in rotary, softmax and SiLU
(tests/test_native_decode.py).
"""

from __future__ import annotations

import torch

from llmlab.engine.packed_weights import PackedWeights
from llmlab.nn import native
from llmlab.nn.quantized_linear import Int4Linear


def _int4_projection(projection) -> Int4Linear | None:
    layer = projection.quantized
    if isinstance(layer, Int4Linear) and layer.kernel == "native" and projection.bias is None:
        return layer
    return None


class NativeDecode:
    """Per-layer arguments of decode_layer_int4 (norm weights, eps, the four projections' tiles,
    scales and group sizes), gathered once per packing."""

    def __init__(self, layers: list[tuple], heads: int, kv_heads: int, scale: float):
        self.layers, self.heads, self.kv_heads, self.scale = layers, heads, kv_heads, scale

    @classmethod
    def build(cls, model, packed: PackedWeights | None, scale: float) -> NativeDecode | None:
        """A NativeDecode for this model and packing, or None where it does not apply."""
        c = model.config
        if (
            packed is None
            or getattr(c, "layer_types", None) is not None  # Gemma 3: its own layer
            or c.sliding_window is not None
            or model.model.embed_tokens.weight.dtype != torch.float32
            or model.model.embed_tokens.weight.device.type != "cpu"
            or not native.available()
        ):
            return None
        layers = []
        for module, layer in zip(model.model.layers, packed.layers):
            projections = [
                _int4_projection(p) for p in (layer.qkv, layer.o, layer.gate_up, layer.down)
            ]
            norms = (module.input_layernorm, module.post_attention_layernorm)
            if None in projections or any(
                n.weight.dtype != torch.float32 or n.eps != norms[0].eps for n in norms
            ):
                return None
            layers.append(
                (
                    norms[0].weight,
                    norms[1].weight,
                    norms[0].eps,
                    [p.tiles for p in projections],
                    [p.scale_min for p in projections],
                    [p.group_size for p in projections],
                )
            )
        return cls(layers, c.num_attention_heads, c.num_key_value_heads, scale)

    def __call__(self, x: torch.Tensor, kv_cache: list[torch.Tensor], cos, sin, inputs) -> None:
        """Run every layer for the one decode row of `inputs` (a StepInputs), x [1, hidden] in place."""
        cos, sin = cos.reshape(-1), sin.reshape(-1)
        slot, context = int(inputs.slot_mapping[0]), inputs.decode_slots[0]
        for cache, layer in zip(kv_cache, self.layers):
            native.decode_layer_int4(
                x, cache, *layer, cos, sin, slot, context, self.heads, self.kv_heads, self.scale
            )
