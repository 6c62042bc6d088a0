"""Load a Q4_1 GGUF straight into int4 `Int4Linear` layers: the file's 4-bit codes, scales and
minimums are repacked, never expanded to a float32 weight matrix.

    model, tokenizer = read_gguf_int4("SmolLM2-135M-Instruct.Q4_1.gguf")

Q4_1 stores each row in blocks of 32 weights as (d: fp16, m: fp16, 16 bytes of nibbles; the low
nibbles are weights 0–15, the high ones 16–31) with w = d·q + m — exactly Int4Linear's group-32
layout. Tensors of other types (the token embedding, norms, anything not Q4_1) are dequantized
with `llmlab.formats.gguf_quants` as `read_gguf` does. A tied LM head gets its own int4 copy of
the embedding. Q/K rows get llama.cpp's rotary permutation undone, on the codes and scales alike.

`group_size` other than the file's 32 requantizes each layer from its Q4_1 values to groups of that
size (one layer's floats at a time, never the whole model): fewer scales, a little more error.
A layer whose input width the group size does not divide keeps the file's group of 32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from llmlab.errors import CorruptFileError
from llmlab.formats.gguf import (
    _rope_scaling,
    build_hf_config,
    hf_tensor_name,
    open_gguf,
    read_metadata,
    undo_rope_permutation,
)
from llmlab.formats.gguf_quants import dequantize
from llmlab.nn.quantized_linear import Int4Linear

Q4_1_BLOCK_BYTES = 20
Q4_1_GROUP = 32
log = logging.getLogger("llmlab.formats")


def q4_1_parts(
    raw: np.ndarray, rows: int, cols: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw Q4_1 bytes of a [rows, cols] matrix → codes [rows, cols] uint8, d and m [rows, cols/32]."""
    data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if data.size != rows * cols // 32 * Q4_1_BLOCK_BYTES:
        raise CorruptFileError(
            f"Q4_1 tensor of {data.size} bytes does not hold a {rows}×{cols} matrix"
        )
    blocks = torch.from_numpy(data.copy()).view(rows, cols // 32, Q4_1_BLOCK_BYTES)
    d = blocks[..., 0:2].contiguous().view(torch.float16).float().squeeze(-1)
    m = blocks[..., 2:4].contiguous().view(torch.float16).float().squeeze(-1)
    nibbles = blocks[..., 4:]
    codes = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=-1).reshape(rows, cols)
    return codes, d, m


def _regroup(layer: Int4Linear, group_size: int) -> Int4Linear:
    """The same weights requantized to another group size (or as they are when it does not fit)."""
    if group_size == layer.group_size:
        return layer
    if layer.in_features % group_size:
        log.warning(
            "int4 group size %d does not divide %d inputs: keeping the file's group of %d",
            group_size,
            layer.in_features,
            layer.group_size,
        )
        return layer
    return Int4Linear.from_weight(layer.dequantized_weight(), group_size)


def read_gguf_int4(path: str | Path, dtype=None, group_size: int = Q4_1_GROUP):
    from llmlab.device import pick_dtype
    from llmlab.models.llama import LlamaConfig, LlamaForCausalLM
    from llmlab.nn.rotary import RotaryEmbedding
    from llmlab.tokenize.tokenizer import load_tokenizer

    path = str(path)
    reader = open_gguf(path)
    metadata = read_metadata(reader)
    config = build_hf_config(metadata, {t.name for t in reader.tensors}, path)
    permuted = (
        config["model_type"] == "llama"
    )  # see read_gguf: llama.cpp permutes Q/K rows for llama only
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    floats: dict[str, torch.Tensor] = {}
    layers: dict[str, Int4Linear] = {}
    rope_factors = None
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        projection = name.split(".")[-2] if name else ""
        if (
            tensor.tensor_type.name == "Q4_1"
            and name
            and name.endswith(".weight")
            and len(shape) == 2
            and name != "model.embed_tokens.weight"
        ):
            parts = q4_1_parts(tensor.data, *shape)
            if permuted and projection in heads:
                parts = tuple(undo_rope_permutation(p, heads[projection]) for p in parts)
            layers[name.removesuffix(".weight")] = _regroup(
                Int4Linear(*parts, group_size=Q4_1_GROUP), group_size
            )
            continue
        values = dequantize(tensor.data, tensor.tensor_type.name, shape, tensor.name)
        if name is None:
            rope_factors = values
            continue
        if permuted and projection in heads:
            values = undo_rope_permutation(values, heads[projection])
        floats[name] = values
    config["rope_scaling"] = _rope_scaling(
        metadata,
        metadata["general.architecture"],
        rope_factors,
        config["rope_theta"],
        config["head_dim"],
    )
    if config["vocab_size"] is None:
        config["vocab_size"] = floats["model.embed_tokens.weight"].shape[0]

    model_config = LlamaConfig.from_hf(config)
    model_config.tie_word_embeddings = False  # the head becomes its own int4 layer below
    with torch.device("meta"):
        model = LlamaForCausalLM(model_config)
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    if "lm_head" not in layers:
        head = floats.pop("lm_head.weight", floats["model.embed_tokens.weight"])
        fits = head.shape[1] % group_size == 0
        model.lm_head = Int4Linear.from_weight(head, group_size if fits else Q4_1_GROUP)
    target = pick_dtype(dtype, torch.device("cpu"))
    missing, unexpected = model.load_state_dict(
        {k: v.to(target) for k, v in floats.items()}, strict=False, assign=True
    )
    missing = [
        k for k in missing if not any(k.startswith(prefix) for prefix in [*layers, "lm_head"])
    ]
    if missing or unexpected:
        raise CorruptFileError(
            f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.model.rotary = RotaryEmbedding(
        model_config.head_dim, model_config.rope_theta, model_config.rope_scaling
    )
    model.source_path = path
    return model.eval(), load_tokenizer(path)
