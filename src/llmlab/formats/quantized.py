"""Quantized model folders (written by `llmlab quantize`): read them back into quantized layers.

    config, floats, layers = read_quantized_folder("runs/smollm2-gptq4")
    # floats: the tensors that stay float (embedding, norms); layers: {module name: quantized layer}

A quantized folder is a Hugging Face-style folder — config.json, model.safetensors, tokenizer
files — whose config.json has a `quantization_config`:

    {"quant_method": "llmlab", "method": "gptq", "bits": 4, "group_size": 64,
     "activations": null | "dynamic" | "static", "layers": {"model.layers.0.self_attn.q_proj": "int4", …}}

and whose safetensors file holds, for each quantized layer NAME (kind from `layers`):

| kind | tensors |
|---|---|
| int8 (weight-only) | NAME.qweight int8 [out, in], NAME.weight_scale float32 [out] |
| int4 (weight-only, groups) | NAME.qweight_int4 uint8 [out, in/2] (two codes a byte, low nibble first), NAME.scales and NAME.minimums float16 [out, in/group] |
| w8a8 | NAME.qweight int8 [out, in], NAME.weight_scale float32 [out]; static also NAME.input_scale, NAME.input_zero_point float32 [1]; smoothed (SmoothQuant) also NAME.input_divisor float32 [in] |
| w8a8-asym | as w8a8 (dynamic): activations per token over their own [min, max] (asymmetric) |

A w8a8 / w8a8-asym layer with float outlier input channels (LLM.int8()-style, `--outliers K`) also
has NAME.outlier_index int64 [k] and NAME.outlier_weight float32 [out, k] (its qweight columns at
those indices are zero). One with per-token groups of activation scales (`--activation-group-size
G`) has NAME.input_group_size int64 [1].

plus NAME.bias when the layer has one. A tied LM head is stored as its own quantized layer, and
the config says `tie_word_embeddings: false`. Transformers cannot load these folders (the format
is llmlab's); `llmlab.load` can.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmlab.errors import CorruptFileError
from llmlab.nn.quantized_linear import Int4Linear, Int8Linear, W8A8Linear

QUANT_METHOD = "llmlab"
KINDS = ("int8", "int4", "w8a8", "w8a8-asym")


def is_quantized_config(config: dict) -> bool:
    return (config.get("quantization_config") or {}).get("quant_method") == QUANT_METHOD


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """codes [out, in] in 0…15 → uint8 [out, in / 2], even columns in the low nibble."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([packed & 0x0F, packed >> 4], -1).reshape(packed.shape[0], -1)


def layer_tensors(name: str, layer) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, tensors to store) of one quantized layer."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(layer, Int4Linear):
        kind = "int4"
        codes = layer._codes().round().to(torch.uint8)
        out["qweight_int4"] = pack_int4(codes)
        out["scales"] = layer.scales.half()
        out["minimums"] = layer.minimums.half()
    elif isinstance(layer, W8A8Linear):
        kind = "w8a8-asym" if layer.asymmetric else "w8a8"
        out["qweight"], out["weight_scale"] = layer.qweight, layer.weight_scale
        if layer.static:
            out["input_scale"] = layer.input_scale
            out["input_zero_point"] = layer.input_zero_point
        if layer.smoothed:
            out["input_divisor"] = layer.input_divisor
        if layer.input_group_size:
            out["input_group_size"] = torch.tensor([layer.input_group_size])
        if layer.has_outliers:
            out["outlier_index"] = layer.outlier_index
            out["outlier_weight"] = layer.outlier_weight
    elif isinstance(layer, Int8Linear):
        kind = "int8"
        out["qweight"], out["weight_scale"] = layer.qweight, layer.scales
    else:
        raise TypeError(f"{name}: not a quantized layer ({type(layer).__name__})")
    if layer.bias is not None:
        out["bias"] = layer.bias.detach()
    # clone: layers may share a tensor (one smoothing divisor for q/k/v), safetensors stores each once
    return kind, {f"{name}.{k}": v.detach().cpu().contiguous().clone() for k, v in out.items()}


def build_layer(name: str, kind: str, tensors: dict[str, torch.Tensor]):
    """The quantized layer NAME of this kind from the folder's tensors."""

    def get(key: str, required: bool = True):
        value = tensors.get(f"{name}.{key}")
        if value is None and required:
            raise CorruptFileError(f"quantized folder: '{name}.{key}' missing for a {kind} layer")
        return value

    bias = get("bias", required=False)
    if kind == "int4":
        scales = get("scales").float()
        codes = unpack_int4(get("qweight_int4"))
        group_size = codes.shape[1] // scales.shape[1]
        return Int4Linear(codes, scales, get("minimums").float(), group_size, bias)
    if kind == "int8":
        return Int8Linear(get("qweight"), get("weight_scale"), bias)
    if kind in ("w8a8", "w8a8-asym"):
        scale = get("input_scale", required=False)
        group = get("input_group_size", required=False)
        return W8A8Linear(
            get("qweight"),
            get("weight_scale"),
            bias,
            scale,
            get("input_zero_point", scale is not None),
            get("input_divisor", required=False),
            asymmetric=kind == "w8a8-asym",
            outlier_index=get("outlier_index", required=False),
            outlier_weight=get("outlier_weight", get("outlier_index", False) is not None),
            input_group_size=None if group is None else int(group.item()),
        )
    raise CorruptFileError(f"quantized folder: layer '{name}' has unknown kind '{kind}'")


def read_quantized_folder(folder: str | Path, config: dict | None = None):
    """(config dict, float tensors, {module name: quantized layer}): the reader `llmlab.load`
    calls for quant_method "llmlab" (loading.QUANTIZED_FOLDER_READERS)."""
    from llmlab.formats.hf import read_hf_folder

    config, tensors = read_hf_folder(folder)
    layers_kind = (config.get("quantization_config") or {}).get("layers")
    if not isinstance(layers_kind, dict) or not layers_kind:
        raise CorruptFileError(f"{folder}: quantization_config lists no quantized layers")
    layers = {name: build_layer(name, kind, tensors) for name, kind in layers_kind.items()}
    prefixes = tuple(f"{name}." for name in layers)
    floats = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
    return config, floats, layers
