"""Read a Q4_1 GGUF with its 4-bit blocks kept packed: the file's codes, scales and minimums per
projection, never expanded to a float32 weight matrix. Tensors and configs only — the model is
built by `llmlab.load(path, quant="int4")` (llmlab/loading.py).

    config, floats, packed = read_gguf_int4("SmolLM2-135M-Instruct.Q4_1.gguf")
    codes, scales, minimums = packed["model.layers.0.self_attn.q_proj"]

Q4_1 stores each row in blocks of 32 weights as (d: fp16, m: fp16, 16 bytes of nibbles; the low
nibbles are weights 0–15, the high ones 16–31) with w = d·q + m — exactly Int4Linear's group-32
layout. Tensors of other types (the token embedding, norms, anything not Q4_1) are dequantized
with `llmlab.formats.gguf_quants` as `read_gguf` does. Q/K rows get llama.cpp's rotary
permutation undone, on the codes and scales alike. A file of another family (Gemma 3: K-quants,
no Q4_1) gives None: the caller quantizes float weights instead.
"""

from __future__ import annotations

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

Q4_1_BLOCK_BYTES = 20
Q4_1_GROUP = 32


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


def read_gguf_int4(path: str | Path):
    """(HF config dict, float tensors by HF name, {projection path: (codes, d, m)} of its Q4_1
    matrices), or None when the file is not a Llama-family decoder. The embedding is always among
    the floats (it is looked up, not multiplied)."""
    path = str(path)
    reader = open_gguf(path)
    metadata = read_metadata(reader)
    config = build_hf_config(metadata, {t.name for t in reader.tensors}, path)
    if config["model_type"] not in ("llama", "mistral", "qwen2"):
        return None
    permuted = (
        config["model_type"] == "llama"
    )  # see read_gguf: llama.cpp permutes Q/K rows for llama only
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    floats: dict[str, torch.Tensor] = {}
    packed: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
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
            packed[name.removesuffix(".weight")] = parts
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

    return config, floats, packed
