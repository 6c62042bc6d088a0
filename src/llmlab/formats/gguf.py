"""Read a llama.cpp GGUF file into a Hugging Face style config and a float32 state dict.

    from llmlab.formats.gguf import read_gguf
    hf_config, state_dict = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")

What happens:
1. `GGUFFile` (formats/gguf_reader.py) parses the header: key/value metadata and the tensor table.
   It checks every tensor's byte range against the file size first, so a truncated download fails
   with one line naming the tensor instead of a numpy reshape error.
2. Metadata `{arch}.*` keys become config.json fields (`llama`, `qwen2` and `gemma3`
   architectures; llama.cpp also files Mistral and SmolLM under `llama`).
3. Tensors are dequantized (llmlab.formats.gguf_quants), renamed to LlamaForCausalLM names, and the
   Q/K rows that llama.cpp's converter permuted are put back (see `undo_rope_permutation`).
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from llmlab.errors import CorruptFileError, LlmlabError, UnsupportedArchitectureError
from llmlab.formats.gguf_quants import dequantize
from llmlab.formats.gguf_reader import GGUFFile

# general.architecture → (HF model_type, HF architectures entry)
SUPPORTED_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}

# Per-layer GGUF tensor names → HF names ("blk.{i}." / "model.layers.{i}." prefixes added below).
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 normalizes four times per layer; llama.cpp's `ffn_norm` is its pre-feed-forward norm.
_GEMMA3_LAYER_TENSORS = {
    **_LAYER_TENSORS,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# Tokens chat templates close a turn with. Generation must stop on these, not on a document-level
# end-of-text token the model rarely emits mid-chat.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """A parsed GGUF file (formats/gguf_reader.py); a missing, non-GGUF or truncated file raises
    one clear line."""
    path = str(path)
    if not os.path.isfile(path):
        raise LlmlabError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise CorruptFileError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    return GGUFFile(path)


def read_metadata(reader: GGUFFile) -> dict:
    """All key/value metadata as plain Python values (arrays as lists, strings decoded)."""
    return dict(reader.metadata)


def _float32_value(value) -> float:
    # Metadata floats are float32; 9.999999747378752e-06 is what the writer meant as 1e-05.
    return float(str(np.float32(value)))


def end_of_turn_token_id(
    tokens: list[str], chat_template: str | None, eos_token_id: int | None
) -> int | None:
    """The id generation should stop on: the chat template's end-of-turn token when it has one.

    GGUF files carry a single `tokenizer.ggml.eos_token_id`, and converters disagree about whether
    it means end-of-document (`<|endoftext|>`) or end-of-turn (`<|im_end|>`); some SmolLM2 files
    even store `<|im_start|>`. A chat model ends its reply with the template's end-of-turn token,
    so when the template writes one of END_OF_TURN_TOKENS and the vocabulary has it, that wins.
    """
    if chat_template:
        for token in END_OF_TURN_TOKENS:
            if token in chat_template and token in tokens:
                return tokens.index(token)
    return eos_token_id


def _rope_scaling(
    metadata: dict, arch: str, rope_factors: torch.Tensor | None, theta: float, head_dim: int
):
    kind = metadata.get(f"{arch}.rope.scaling.type")
    factor = metadata.get(f"{arch}.rope.scaling.factor")
    original = metadata.get(f"{arch}.rope.scaling.original_context_length")
    if rope_factors is not None:
        return _llama3_scaling_from_factors(rope_factors, theta, head_dim, original)
    if kind in (None, "none") or factor in (None, 0, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": _float32_value(factor)}
    if kind == "yarn":
        scaling = {"rope_type": "yarn", "factor": _float32_value(factor)}
        if original:
            scaling["original_max_position_embeddings"] = int(original)
        return scaling
    raise LlmlabError(f"unsupported rope scaling type '{kind}' in GGUF metadata")


def _llama3_scaling_from_factors(
    factors: torch.Tensor, theta: float, head_dim: int, original
) -> dict:
    """Llama 3.1 files store rope scaling as per-frequency divisors (`rope_freqs.weight`) instead of
    the four config numbers. Rebuild the config from them: the largest divisor is `factor`; we try
    the published low/high frequency factors and keep the set that reproduces the tensor."""
    factor = float(factors.max())
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    for original_context in [int(original)] if original else [8192, 4096, 2048]:
        for low, high in [(1.0, 4.0), (1.0, 2.0), (2.0, 4.0)]:
            smooth = (original_context / wavelen - low) / (high - low)
            expected = torch.ones_like(wavelen)  # high frequencies: unscaled
            expected[wavelen > original_context / low] = (
                factor  # low frequencies: divided by factor
            )
            middle = (wavelen >= original_context / high) & (wavelen <= original_context / low)
            # in between, a smooth blend: divisor 1 / ((1 - s) / factor + s)
            expected[middle] = 1.0 / ((1 - smooth[middle]) / factor + smooth[middle])
            if torch.allclose(expected.float(), factors.float().reshape(-1), rtol=1e-3):
                return {
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original_context,
                }
    raise LlmlabError(
        "GGUF rope_freqs.weight does not match llama3 rope scaling; this rope variant is unsupported"
    )


def build_hf_config(metadata: dict, tensor_names: set[str], path: str) -> dict:
    """config.json-style dict from GGUF metadata (`{arch}.*` and `tokenizer.ggml.*` keys)."""
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise UnsupportedArchitectureError(
            f"{path}: GGUF architecture '{arch}' is not supported (supported: {supported})"
        )
    model_type, hf_class = SUPPORTED_ARCHITECTURES[arch]

    def need(key):
        full = f"{arch}.{key}"
        if full not in metadata:
            raise CorruptFileError(f"{path}: GGUF metadata lacks '{full}'")
        return metadata[full]

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab_size = metadata.get(f"{arch}.vocab_size") or (len(tokens) if tokens else None)
    head_dim = int(metadata.get(f"{arch}.attention.key_length", hidden // heads))
    eos_id = metadata.get("tokenizer.ggml.eos_token_id")
    if arch == "gemma3":
        return _gemma3_config(metadata, arch, tensor_names, vocab_size, head_dim, need)
    if tokens:
        eos_id = end_of_turn_token_id(tokens, metadata.get("tokenizer.chat_template"), eos_id)
    return {
        "architectures": [hf_class],
        "model_type": model_type,
        "vocab_size": int(vocab_size) if vocab_size else None,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": int(metadata.get(f"{arch}.context_length", 2048)),
        "rms_norm_eps": _float32_value(
            metadata.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
        ),
        "rope_theta": _float32_value(metadata.get(f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,  # filled by read_gguf, which has the rope_freqs tensor
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_id,
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "mlp_bias": False,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }


def _gemma3_config(metadata, arch, tensor_names, vocab_size, head_dim, need) -> dict:
    """Gemma 3's config.json fields. The GGUF leaves out what llama.cpp hard-codes for this
    architecture, so we fill in the same values (and transformers' Gemma3TextConfig defaults):
    sliding-window layers use RoPE base 10k unless `rope.freq_base_swa` says otherwise, every
    sixth layer is global, and scores are scaled by head_dim^-0.5 (query_pre_attn_scalar)."""
    layers = int(need("block_count"))
    pattern = int(metadata.get(f"{arch}.attention.sliding_window_pattern", 6) or 6)
    eos_id = metadata.get("tokenizer.ggml.eos_token_id")
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": int(vocab_size) if vocab_size else None,
        "hidden_size": int(need("embedding_length")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": int(need("attention.head_count")),
        "num_key_value_heads": int(metadata.get(f"{arch}.attention.head_count_kv", 1)),
        "head_dim": head_dim,
        "max_position_embeddings": int(metadata.get(f"{arch}.context_length", 32768)),
        "rms_norm_eps": _float32_value(
            metadata.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
        ),
        "rope_theta": _float32_value(metadata.get(f"{arch}.rope.freq_base", 1_000_000.0)),
        "rope_local_base_freq": _float32_value(
            metadata.get(f"{arch}.rope.freq_base_swa", 10_000.0)
        ),
        "rope_scaling": None,  # filled by read_gguf
        "query_pre_attn_scalar": head_dim,
        "sliding_window": int(metadata.get(f"{arch}.attention.sliding_window", 512)),
        "layer_types": [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(layers)
        ],
        "final_logit_softcapping": metadata.get(f"{arch}.final_logit_softcapping"),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_id,
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
        "hidden_activation": "gelu_pytorch_tanh",
        "torch_dtype": "float32",
    }


def undo_rope_permutation(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Invert llama.cpp's Q/K row permutation.

    Hugging Face Llama applies rotary embeddings to the two *halves* of each head (dimension i is
    paired with i + head_dim/2); llama.cpp's kernel pairs *adjacent* dimensions (2i, 2i+1). Its
    converter therefore reorders the rows of q_proj and k_proj within each head: half 0 row i moves
    to row 2i and half 1 row i to row 2i+1, i.e. reshape (heads, 2, head_dim/2) → swap axes 1, 2.
    Undoing it reads rows as (heads, head_dim/2, 2) and swaps them back. Works for biases too.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    rest = weight.shape[1:]
    return weight.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


def hf_tensor_name(gguf_name: str, arch: str = "llama") -> str | None:
    """GGUF tensor name → Hugging Face parameter name (None for tensors we consume elsewhere)."""
    layer_tensors = _GEMMA3_LAYER_TENSORS if arch == "gemma3" else _LAYER_TENSORS
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    if gguf_name == "rope_freqs.weight":
        return None
    match = _LAYER_NAME.fullmatch(gguf_name)
    if match and match.group(2) in layer_tensors:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{layer_tensors[part]}.{kind}"
    raise UnsupportedArchitectureError(
        f"unexpected GGUF tensor '{gguf_name}': not part of a plain Llama/Qwen2 decoder (MoE and "
        "other variants are unsupported)"
    )


def _progress(items, description: str):
    """A rich progress bar on an interactive terminal; silent otherwise (tests, pipes, servers)."""
    if not sys.stderr.isatty():
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, transient=True, console=Console(stderr=True))


def read_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(hf_config, state_dict) from a GGUF file: float32 tensors with LlamaForCausalLM names."""
    path = str(Path(path))
    reader = open_gguf(path)
    metadata = read_metadata(reader)
    tensor_names = {t.name for t in reader.tensors}
    config = build_hf_config(metadata, tensor_names, path)
    # llama.cpp only permutes Q/K for architectures whose HF code uses half-split rotary but whose
    # llama.cpp kernel is the "normal" (adjacent pairs) rope: llama. Qwen2 runs NEOX-style rope in
    # llama.cpp, so its converter leaves the rows alone.
    permuted = config["model_type"] == "llama"
    arch = metadata["general.architecture"]
    # llama.cpp's Gemma converter stores norm weights as 1 + w (its RMSNorm multiplies by the
    # weight alone); Gemma3RMSNorm multiplies by 1 + w, so take the 1 off again (as transformers).
    norms_plus_one = arch == "gemma3"

    state_dict: dict[str, torch.Tensor] = {}
    rope_factors = None
    for tensor in _progress(reader.tensors, f"dequantizing {Path(path).name}"):
        name = hf_tensor_name(tensor.name, arch)  # before the (slow) dequantization: fail fast
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        values = dequantize(tensor.data, tensor.tensor_type.name, shape, tensor.name)
        if name is None:
            rope_factors = values
            continue
        if permuted and ".self_attn.q_proj." in name:
            values = undo_rope_permutation(values, config["num_attention_heads"])
        elif permuted and ".self_attn.k_proj." in name:
            values = undo_rope_permutation(values, config["num_key_value_heads"])
        elif norms_plus_one and name.endswith("norm.weight"):
            values = values - 1
        state_dict[name] = values

    config["rope_scaling"] = _rope_scaling(
        metadata,
        metadata["general.architecture"],
        rope_factors,
        config["rope_theta"],
        config["head_dim"],
    )
    if config["vocab_size"] is None:
        config["vocab_size"] = state_dict["model.embed_tokens.weight"].shape[0]
    return config, state_dict
