"""Llama-family logit parity with transformers (fp32, max abs diff <= 1e-4)."""

import pytest
import torch
import transformers
from tiny import save_tiny_llama, tiny_llama_config

from llmlab.formats.hf import read_hf_folder, save_hf_folder
from llmlab.models.llama import KVCache, LlamaConfig, LlamaForCausalLM, model_from_hf

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


def reference_and_ours(config):
    torch.manual_seed(0)
    reference = type_for(config)(config).eval()
    # transformers initialises biases to zero; make them random so they are really compared
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return reference, model_from_hf(config.to_dict(), reference.state_dict())


def type_for(config):
    return {
        "llama": transformers.LlamaForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
        "mistral": transformers.MistralForCausalLM,
    }[config.model_type]


def assert_same_logits(reference, ours, length=40):
    ids = torch.randint(
        0, reference.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected, actual = reference(ids).logits, logits_of(ours, ids)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-4


def logits_of(model, ids):
    out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits  # ours returns logits directly


CONFIGS = {
    "llama-untied-gqa": lambda: tiny_llama_config(),
    "llama-tied": lambda: tiny_llama_config(tie_word_embeddings=True, num_key_value_heads=4),
    "llama3-rope-scaling": lambda: tiny_llama_config(
        rope_scaling=LLAMA3_SCALING, rope_theta=500000.0
    ),
    "linear-rope-scaling": lambda: tiny_llama_config(
        rope_scaling={"rope_type": "linear", "factor": 4.0}
    ),
    "llama-attention-bias": lambda: tiny_llama_config(attention_bias=True),
    "qwen2-qkv-bias": lambda: transformers.Qwen2Config(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    ),
    "mistral-sliding-window": lambda: transformers.MistralConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
        sliding_window=8,
    ),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_transformers(name):
    reference, ours = reference_and_ours(CONFIGS[name]())
    if name.startswith("mistral"):
        # transformers may ignore the window under SDPA; compare against an explicit eager reference
        reference.config._attn_implementation = "eager"
    assert_same_logits(reference, ours)


@pytest.mark.parametrize(
    "name", ["llama-tied", "llama-untied-gqa", "qwen2-qkv-bias", "llama3-rope-scaling"]
)
def test_save_load_round_trip_through_our_writer(tmp_path, name):
    reference, ours = reference_and_ours(CONFIGS[name]())
    save_hf_folder(ours, tmp_path)
    # transformers reads our folder …
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert_same_logits(reference, reloaded)
    # … and so do we
    config, state_dict = read_hf_folder(tmp_path)
    assert_same_logits(reference, model_from_hf(config, state_dict))


def test_sharded_save_and_load(tmp_path):
    reference, ours = reference_and_ours(tiny_llama_config())
    save_hf_folder(ours, tmp_path, max_shard_bytes=100_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    assert_same_logits(
        reference, transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    )
    config, state_dict = read_hf_folder(tmp_path)
    assert_same_logits(reference, model_from_hf(config, state_dict))


def test_kv_cache_matches_full_forward():
    _, ours = reference_and_ours(tiny_llama_config())
    ids = torch.randint(0, 320, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = ours(ids)
        cache = KVCache.for_model(ours, batch_size=1, max_length=24)
        # a prefill of 10 tokens, a chunk of 6, then single tokens
        pieces = [ours(ids[:, :10], cache), ours(ids[:, 10:16], cache)]
        pieces += [ours(ids[:, i : i + 1], cache) for i in range(16, 24)]
    assert cache.length == 24
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-4


def test_config_round_trip_and_bad_configs():
    config = LlamaConfig.from_hf(tiny_llama_config(rope_scaling=LLAMA3_SCALING).to_dict())
    assert LlamaConfig.from_hf(config.to_hf()) == config
    from llmlab.errors import UnsupportedArchitectureError

    with pytest.raises(UnsupportedArchitectureError, match="rope_scaling type 'yarn'"):
        LlamaConfig.from_hf(
            tiny_llama_config(rope_scaling={"rope_type": "yarn", "factor": 2.0}).to_dict()
        )
    with pytest.raises(UnsupportedArchitectureError, match="hidden_act"):
        LlamaConfig.from_hf({**tiny_llama_config().to_dict(), "hidden_act": "gelu"})


def test_random_init_model_runs():
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 50)


def test_tiny_folder_helper_loads_with_llmlab(tmp_path):
    import llmlab

    reference, _ = save_tiny_llama(tmp_path)
    model, tokenizer = llmlab.load(tmp_path)
    assert tokenizer.chat_template
    assert_same_logits(reference, model)
