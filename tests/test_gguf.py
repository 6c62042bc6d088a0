"""GGUF reading: dequantizers vs the `gguf` reference, tiny models written with GGUFWriter read back
exactly (Q/K permutation undone) and as transformers reads them, the real SmolLM2 file against
transformers' own GGUF loader, and clear errors for broken files.

    .venv/bin/python -m pytest tests/test_gguf.py -q
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT

from llmlab.errors import CorruptFileError, LlmlabError, UnsupportedArchitectureError
from llmlab.formats.gguf import build_hf_config, end_of_turn_token_id, read_gguf
from llmlab.formats.gguf_quants import dequantize
from llmlab.registry import resolve

# --- dequantizers ---------------------------------------------------------------------------

# Byte offsets of the fp16 scale fields in each block; random bytes there would be NaN/inf/huge.
FP16_FIELDS = {
    "Q8_0": [0],
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q4_K": [0, 2],
    "Q6_K": [208],
}


def random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random raw bytes for `n_blocks` blocks, with sane fp16 scales where the format has them."""
    block_weights, block_bytes = gguf.GGML_QUANT_SIZES[QT[type_name]]
    if type_name in ("F32", "F16", "BF16"):
        values = rng.standard_normal(n_blocks).astype(np.float32)
        if type_name == "BF16":
            return (
                (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
            )  # top half of f32
        return values.astype(np.float16 if type_name == "F16" else np.float32).view(np.uint8)
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset in FP16_FIELDS[type_name]:
        scales = (rng.standard_normal((n_blocks, 1)) * 0.01).astype(np.float16)
        raw[:, offset : offset + 2] = scales.view(np.uint8)
    return raw.reshape(-1)


def reference(raw: np.ndarray, type_name: str, shape) -> torch.Tensor:
    rows = raw.reshape(shape[0], -1)
    return torch.from_numpy(
        np.asarray(gguf.quants.dequantize(rows, QT[type_name]), dtype=np.float32)
    )


@pytest.mark.parametrize(
    "type_name", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]
)
def test_dequantize_matches_gguf_reference_on_random_blocks(type_name):
    rng = np.random.default_rng(len(type_name) * 7 + ord(type_name[-1]))
    block_weights, _ = gguf.GGML_QUANT_SIZES[QT[type_name]]
    shape = (8, 4 * max(block_weights, 64))
    n_blocks = shape[0] * shape[1] // block_weights
    raw = random_blocks(type_name, n_blocks, rng)
    ours = dequantize(raw, type_name, shape)
    expected = reference(raw, type_name, shape)
    assert ours.dtype == torch.float32 and ours.shape == shape
    assert torch.isfinite(expected).all() and expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("type_name", ["BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_dequantize_inverts_gguf_quantize(type_name):
    weights = np.random.default_rng(1).standard_normal((16, 128)).astype(np.float32)
    raw = gguf.quants.quantize(weights, QT[type_name])
    ours = dequantize(raw, type_name, weights.shape)
    torch.testing.assert_close(ours, reference(raw, type_name, weights.shape), rtol=1e-6, atol=1e-7)
    # and the round trip is a quantization of the input, not noise: error well under the spread
    assert (ours - torch.from_numpy(weights)).abs().mean() < 0.15


def test_dequantize_unsupported_type_names_type_and_tensor():
    with pytest.raises(LlmlabError, match=r"blk\.0\.ffn_up\.weight.*Q5_K"):
        dequantize(np.zeros(176, np.uint8), "Q5_K", (1, 256), "blk.0.ffn_up.weight")


# --- tiny models written with GGUFWriter ----------------------------------------------------

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Which GGML type each weight is stored as: a mix, so every path (and Q/K under each) is exercised.
STORAGE = {
    "attn_q": "Q8_0",
    "attn_k": "F16",
    "attn_v": "Q8_0",
    "ffn_gate": "F16",
    "ffn_up": "Q8_0",
    "token_embd": "Q8_0",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGUF:
        return HF_TO_GGUF[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{LAYER_HF_TO_GGUF[module]}.{kind}"


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Llama q_proj/k_proj rows."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def tiny_hf_model(arch: str, tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    with torch.no_grad():
        for parameter in model.parameters():  # norms start at 1 and biases at 0: randomize all
            parameter.normal_(0, 0.5)
    return model


def write_tiny_gguf(
    path: Path, model, arch: str, extra=None, extra_tensors=(), storage=STORAGE
) -> dict[str, torch.Tensor]:
    """Write `model` the way llama.cpp would; return the float32 values each tensor should read back as."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(config.vocab_size)
    for key, value in (extra or {}).items():
        writer.add_key_value(key, value[0], value[1])
    expected = {}
    state = model.state_dict()
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = gguf_name(hf_name)
        values = tensor.detach().float().numpy()
        kind = storage.get(
            name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0], "F32"
        )
        if values.ndim == 1:
            kind = "F32"
        if kind == "F32":
            expected[hf_name] = torch.from_numpy(values.copy())
        elif kind == "F16":
            expected[hf_name] = torch.from_numpy(values.astype(np.float16).astype(np.float32))
        else:  # quantization is per row, so quantizing before or after the row permutation is the same
            expected[hf_name] = reference(
                gguf.quants.quantize(values, QT[kind]), kind, values.shape
            )
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            heads = config.num_attention_heads if ".attn_q." in name else config.num_key_value_heads
            values = llama_cpp_permute(values, heads)
        if kind == "F32":
            writer.add_tensor(name, values)
        elif kind == "F16":
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, QT[kind]), raw_dtype=QT[kind])
    for name, values, kind in extra_tensors:
        writer.add_tensor(name, values, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("qwen2", False)])
def test_tiny_gguf_reads_back_the_original_weights(tmp_path, arch, tied):
    model = tiny_hf_model(arch, tied)
    path = tmp_path / "tiny.gguf"
    expected = write_tiny_gguf(path, model, arch)
    config, state_dict = read_gguf(path)

    assert set(state_dict) == set(expected)
    assert ("lm_head.weight" in state_dict) == (not tied)
    for name, tensor in expected.items():
        assert state_dict[name].dtype == torch.float32
        torch.testing.assert_close(state_dict[name], tensor, rtol=0, atol=0, msg=name)
    hf = model.config
    assert config["model_type"] == arch
    assert config["tie_word_embeddings"] == tied
    assert config["attention_bias"] == (arch == "qwen2")
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
    ):
        assert config[key] == getattr(hf, key), key
    assert config["head_dim"] == hf.hidden_size // hf.num_attention_heads
    assert config["rms_norm_eps"] == pytest.approx(hf.rms_norm_eps)

    # transformers' own GGUF loader reads the same file to the same tensors
    from transformers import AutoModelForCausalLM

    reference_model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    reference_state = reference_model.state_dict()
    for name, tensor in state_dict.items():
        torch.testing.assert_close(
            tensor, reference_state[name].float(), rtol=0, atol=1e-6, msg=name
        )


def test_rope_scaling_from_metadata_and_from_rope_freqs(tmp_path):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = tiny_hf_model("llama", True)
    linear = {
        "llama.rope.scaling.type": ("linear", gguf.GGUFValueType.STRING),
        "llama.rope.scaling.factor": (4.0, gguf.GGUFValueType.FLOAT32),
    }
    write_tiny_gguf(tmp_path / "linear.gguf", model, "llama", extra=linear)
    assert read_gguf(tmp_path / "linear.gguf")[0]["rope_scaling"] == {
        "rope_type": "linear",
        "factor": 4.0,
    }

    # Llama 3.1 style: llama.cpp stores per-frequency divisors in a rope_freqs tensor
    scaling = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    hf_config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_parameters=scaling)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")
    base = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16)
    factors = (base / scaled).float().numpy()
    extra = {"llama.rope.scaling.original_context_length": (64, gguf.GGUFValueType.UINT32)}
    write_tiny_gguf(
        tmp_path / "llama3.gguf",
        model,
        "llama",
        extra=extra,
        extra_tensors=[("rope_freqs.weight", factors, None)],
    )
    config, state_dict = read_gguf(tmp_path / "llama3.gguf")
    assert {k: config["rope_scaling"][k] for k in scaling if k != "rope_theta"} == {
        k: v for k, v in scaling.items() if k != "rope_theta"
    }
    assert not any("rope" in name for name in state_dict)


def test_unsupported_tensor_type_and_architecture(tmp_path):
    model = tiny_hf_model("llama", True)
    write_tiny_gguf(tmp_path / "fp4.gguf", model, "llama", storage={**STORAGE, "ffn_up": "MXFP4"})
    with pytest.raises(LlmlabError, match=r"blk\.0\.ffn_up\.weight uses GGML type MXFP4"):
        read_gguf(tmp_path / "fp4.gguf")

    moe = np.zeros((2, 4, 8), np.float32)
    write_tiny_gguf(
        tmp_path / "moe.gguf",
        model,
        "llama",
        extra_tensors=[("blk.0.ffn_up_exps.weight", moe, None)],
    )
    with pytest.raises(
        UnsupportedArchitectureError, match=r"unexpected GGUF tensor 'blk\.0\.ffn_up_exps\.weight'"
    ):
        read_gguf(tmp_path / "moe.gguf")

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2' is not supported"):
        read_gguf(path)


def test_eos_prefers_the_chat_templates_end_of_turn_token():
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"]
    template = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
    assert end_of_turn_token_id(tokens, template, 1) == 2  # a file that says eos = <|im_start|>
    assert end_of_turn_token_id(tokens, None, 0) == 0  # no template: keep the file's choice
    metadata = {
        "general.architecture": "llama",
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.feed_forward_length": 128,
        "llama.block_count": 1,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.chat_template": template,
    }
    assert build_hf_config(metadata, {"token_embd.weight"}, "x.gguf")["eos_token_id"] == 2


# --- broken files -----------------------------------------------------------------------------

SMOLLM2 = "smollm2-135m-instruct"


@pytest.mark.parametrize(
    "n_bytes,message",
    [
        (100, "truncated or malformed GGUF header"),
        (1_000_000, "truncated or malformed GGUF header"),
        (
            5_000_000,
            r"truncated GGUF: tensor token_embd\.weight needs bytes up to [\d,]+ but the file has 5,000,000",
        ),
        (60_000_000, r"truncated GGUF: tensor blk\.\d+\.\w+\.weight needs bytes up to"),
    ],
)
def test_truncated_gguf_fails_with_one_clear_line(tmp_path, n_bytes, message):
    path = tmp_path / "cut.gguf"
    with open(resolve(SMOLLM2), "rb") as source, open(path, "wb") as target:
        target.write(source.read(n_bytes))
    with pytest.raises(CorruptFileError, match=message) as caught:
        read_gguf(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_non_gguf_file_is_rejected(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, not a model\n")
    with pytest.raises(CorruptFileError, match=r"notes\.gguf: not a GGUF file"):
        read_gguf(path)
    with pytest.raises(LlmlabError, match="no such GGUF file"):
        read_gguf(tmp_path / "missing.gguf")


# --- the real SmolLM2 GGUF ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_pair():
    """(our config, our state dict, transformers' GGUF-loaded model), read once per module."""
    from transformers import AutoModelForCausalLM

    path = resolve(SMOLLM2)
    config, state_dict = read_gguf(path)
    reference_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name
    ).eval()
    return config, state_dict, reference_model


@pytest.mark.slow
def test_smollm2_state_dict_matches_transformers(smollm2_pair):
    config, state_dict, reference_model = smollm2_pair
    reference_state = reference_model.state_dict()
    assert config["num_hidden_layers"] == reference_model.config.num_hidden_layers == 30
    assert config["tie_word_embeddings"] and "lm_head.weight" not in state_dict
    assert config["eos_token_id"] == 2  # <|im_end|>
    for name, tensor in state_dict.items():
        assert (tensor - reference_state[name]).abs().max() <= 1e-5, name
    assert set(state_dict) == set(reference_state) - {"lm_head.weight"}


@pytest.fixture(scope="module")
def smollm2_prompt():
    from llmlab.tokenize.tokenizer import apply_chat, load_tokenizer

    tokenizer = load_tokenizer(resolve(SMOLLM2))
    ids = apply_chat(
        tokenizer,
        [{"role": "user", "content": "Write a long story about a robot who learns to paint."}],
        system="You are a storyteller.",
    )
    assert len(ids) >= 32
    return ids[-32:], tokenizer.eos_token_id


@pytest.mark.slow
def test_smollm2_logits_and_greedy_generation_match_transformers(smollm2_pair, smollm2_prompt):
    import llmlab
    from llmlab.generation import GenerationConfig, generate_token_ids

    _, _, reference_model = smollm2_pair
    prompt, eos_id = smollm2_prompt
    model, _ = llmlab.load(SMOLLM2, device="cpu", dtype="float32", tokenizer=False)
    input_ids = torch.tensor([prompt])
    with torch.no_grad():
        ours = model(input_ids)
        expected = reference_model(input_ids).logits
    assert ours.shape == expected.shape == (1, 32, 49152)
    assert (ours - expected).abs().max() <= 1e-3

    generated = list(
        generate_token_ids(model, prompt, GenerationConfig(max_tokens=32), stop_ids={eos_id})
    )
    with torch.no_grad():
        reference = reference_model.generate(
            input_ids, max_new_tokens=32, do_sample=False, eos_token_id=eos_id, pad_token_id=eos_id
        )
    assert generated == reference[0, 32:].tolist()
    assert len(generated) == 32  # a long story: no early stop, so all 32 tokens were compared
