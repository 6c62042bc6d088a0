"""Gemma 3: tiny random configs against transformers' Gemma3ForCausalLM (fast), a tiny GGUF written
the way llama.cpp writes Gemma, and the real Gemma 3 270M file (slow: logits, greedy generation
through our reference loop, the engine and transformers, tokenizer ids)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from llmlab.formats.gguf import read_gguf
from llmlab.generation import GenerationConfig, generate_token_ids
from llmlab.models.gemma3 import Gemma3Config, KVCache, model_from_hf

# --- tiny random models vs transformers -------------------------------------------------------


def tiny_hf_gemma(seed: int = 0, **overrides):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    values = dict(
        vocab_size=160,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=24,  # ≠ head_dim: the scaling must come from the config
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 50_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
        },
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(**values)
    config._attn_implementation = "eager"
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # norms start at 0: randomize all
            parameter.normal_(0, 0.3 if "norm" in name else 0.2)
    return model


def ours_from(hf_model):
    return model_from_hf(hf_model.config.to_dict(), dict(hf_model.state_dict())).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"final_logit_softcapping": 5.0},
        {"tie_word_embeddings": False},
    ],
    ids=["sliding+global", "softcap", "untied"],
)
def test_tiny_gemma3_logits_match_transformers(overrides, one_thread):
    hf = tiny_hf_gemma(**overrides)
    ours = ours_from(hf)
    ids = torch.randint(3, 160, (2, 30))  # 30 tokens: far past the window of 8
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (2, 30, 160)
    assert (got - expected).abs().max() <= 1e-4


def test_tiny_gemma3_cached_decoding_equals_full_forward(one_thread):
    ours = ours_from(tiny_hf_gemma(seed=3))
    ids = torch.randint(3, 160, (1, 26))
    with torch.no_grad():
        full = ours(ids)
        cache = KVCache.for_model(ours, batch_size=1, max_length=26)
        pieces = [ours(ids[:, :5], cache), ours(ids[:, 5:14], cache)]  # prefill, then a chunk
        pieces += [ours(ids[:, i : i + 1], cache) for i in range(14, 26)]  # past the window
    assert (torch.cat(pieces, 1) - full).abs().max() <= 1e-4


def test_tiny_gemma3_greedy_generation_matches_transformers(one_thread):
    hf = tiny_hf_gemma(seed=5)
    ours = ours_from(hf)
    prompt = torch.randint(3, 160, (1, 6))
    with torch.no_grad():
        expected = hf.generate(
            prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, 6:].tolist()
    got = list(generate_token_ids(ours, prompt[0].tolist(), GenerationConfig(max_tokens=20), set()))
    assert got == expected


def test_gemma3_config_round_trip_and_refusals():
    from transformers import Gemma3TextConfig

    from llmlab.errors import UnsupportedArchitectureError

    hf = tiny_hf_gemma().config.to_dict()
    ours = Gemma3Config.from_hf(hf)
    assert ours.layer_types == hf["layer_types"] and ours.rope_local_base_freq == 100.0
    assert ours.rope_theta == 50_000.0 and ours.attention_scale == 24**-0.5
    back = Gemma3TextConfig(**{k: v for k, v in ours.to_hf().items() if k != "architectures"})
    assert back.layer_types == hf["layer_types"] and back.rope_parameters == hf["rope_parameters"]
    old_style = {k: v for k, v in hf.items() if k not in ("rope_parameters", "layer_types")}
    old_style.update(rope_theta=1e6, rope_local_base_freq=1e4, sliding_window_pattern=2)
    legacy = Gemma3Config.from_hf(old_style)
    assert legacy.layer_types == ["sliding_attention", "full_attention"] * 2
    assert (legacy.rope_theta, legacy.rope_local_base_freq) == (1e6, 1e4)
    with pytest.raises(UnsupportedArchitectureError, match="hidden_activation 'relu'"):
        Gemma3Config.from_hf({**hf, "hidden_activation": "relu"})
    with pytest.raises(UnsupportedArchitectureError, match="attn_logit_softcapping"):
        Gemma3Config.from_hf({**hf, "attn_logit_softcapping": 50.0})


@pytest.mark.parametrize("quant", [None, "int8", "int4"])
def test_tiny_gemma3_engine_matches_reference_generation(quant, one_thread):
    """Paged KV, chunked prefill, continuous batching and prefix caching over contexts past the
    window (8), packed and plain forward paths, block sizes that do and do not divide the window."""
    from tiny import tiny_tokenizer

    from llmlab.engine import LLM, SamplingParams
    from llmlab.nn.quantized_linear import quantize_model

    model = ours_from(tiny_hf_gemma(seed=5))
    if quant:
        quantize_model(model, quant, group_size=32)
    g = torch.Generator().manual_seed(2)
    shared = torch.randint(3, 160, (12,), generator=g).tolist()
    prompts = [torch.randint(3, 160, (n,), generator=g).tolist() for n in (5, 13, 30, 3)]
    prompts += [shared + [7], shared + [9, 11]]  # a shared 12-token prefix: cached blocks reused
    config = GenerationConfig(max_tokens=20)
    expected = [list(generate_token_ids(model, p, config, set())) for p in prompts]
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    for pack, block_size in [(True, 4), (False, 16), (True, 3)]:
        llm = LLM(
            model,
            tiny_tokenizer(),
            block_size=block_size,
            num_kv_blocks=96,
            pack_weights=pack,
            max_num_batched_tokens=16,
        )
        outputs = llm.generate(prompts, params)
        assert [o.token_ids for o in outputs] == expected, (pack, block_size)
    assert llm.engine.scheduler.block_manager.prefix_hit_tokens > 0


@pytest.mark.slow  # torch.compile with Inductor: tens of seconds
def test_tiny_gemma3_compiled_decode_equals_eager(one_thread):
    """The engine's torch.compile'd single-sequence decode on Gemma 3: one graph for the step, the
    same greedy tokens as eager as the context grows past the sliding window, no recompile."""
    from tiny import tiny_tokenizer
    from torch._dynamo.utils import counters

    from llmlab.engine import LLM, SamplingParams

    model = ours_from(tiny_hf_gemma(seed=5))
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 160, (n,), generator=g).tolist() for n in (3, 11, 20)]
    # Seeded sampling, not greedy: greedy on a tiny random Gemma repeats one token, which any mask
    # would give. Contexts reach 17–34 tokens, past the window of 8.
    params = SamplingParams(max_tokens=14, temperature=1.0, seed=3, ignore_eos=True)
    eager = LLM(model, tiny_tokenizer(), block_size=4, num_kv_blocks=64)
    torch._dynamo.reset()
    counters.clear()
    compiled = LLM(model, tiny_tokenizer(), block_size=4, num_kv_blocks=64, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1 and not counters["graph_break"]
    for prompt in prompts:
        tokens = compiled.generate([prompt], params)[0].token_ids
        assert tokens == eager.generate([prompt], params)[0].token_ids
        assert len(set(tokens)) > 1  # not a degenerate repeat that any mask would give
    assert counters["stats"]["unique_graphs"] == graphs  # growing past the window: no recompile


# --- a tiny Gemma 3 GGUF, written as llama.cpp writes one ---------------------------------------

GEMMA_LAYER_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def test_tiny_gemma3_gguf_reads_back_and_runs_like_transformers(tmp_path, one_thread):
    # 6 layers so that the default pattern (five sliding, then one global) is what the file means.
    types = ["sliding_attention"] * 5 + ["full_attention"]
    hf = tiny_hf_gemma(
        seed=7,
        num_hidden_layers=6,
        layer_types=types,
        query_pre_attn_scalar=16,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    )
    c = hf.config
    path = tmp_path / "tiny-gemma3.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(c.sliding_window)
    expected = {}
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        values = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            gguf_name = f"blk.{layer}.{GEMMA_LAYER_TO_GGUF[module]}.{kind}"
        if "norm" in name:  # llama.cpp stores Gemma's norm weights as 1 + w
            writer.add_tensor(gguf_name, values + 1)
            expected[name] = torch.from_numpy(values)
        elif "mlp.up_proj" in name:  # a Q5_0 matrix, as in the real file
            raw = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q5_0)
            writer.add_tensor(gguf_name, raw, raw_dtype=gguf.GGMLQuantizationType.Q5_0)
            dequantized = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q5_0)
            expected[name] = torch.from_numpy(np.asarray(dequantized, np.float32))
        else:
            writer.add_tensor(gguf_name, values)
            expected[name] = torch.from_numpy(values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    config, state_dict = read_gguf(path)
    assert config["model_type"] == "gemma3_text" and config["layer_types"] == types
    assert config["sliding_window"] == 8 and config["rope_local_base_freq"] == 10_000.0
    assert set(state_dict) == set(expected)
    for name, tensor in expected.items():
        assert torch.allclose(state_dict[name], tensor, atol=1e-6), name
    ours = model_from_hf(config, state_dict)
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight.copy_(expected["model.layers.0.mlp.up_proj.weight"])
        for i in range(1, 6):
            key = f"model.layers.{i}.mlp.up_proj.weight"
            hf.get_parameter(key).copy_(expected[key])
        ids = torch.randint(3, 160, (1, 20))
        assert (ours(ids) - hf(ids).logits).abs().max() <= 1e-4


# --- the real Gemma 3 270M --------------------------------------------------------------------

GEMMA = "gemma3-270m"


@pytest.fixture(scope="module")
def gemma_real():
    """(our model, our tokenizer, transformers' Gemma3ForCausalLM on the same dequantized
    weights), built once per module. transformers' own GGUF loader takes 45–90 s on this machine;
    its dequantization is the `gguf` package's, which test_real_file_dequantizes_like_gguf checks
    tensor by tensor against ours."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    import llmlab

    model, tokenizer = llmlab.load(GEMMA, device="cpu", dtype="float32")
    hf_config = Gemma3TextConfig(
        **{k: v for k, v in model.config.to_hf().items() if k != "architectures"}
    )
    hf_config._attn_implementation = "sdpa"
    with torch.device("meta"):  # no random init of 270M weights: every one is assigned below
        reference = Gemma3ForCausalLM(hf_config)
    reference.load_state_dict(model.state_dict(), strict=True, assign=True)
    reference.tie_weights()
    # Non-persistent buffers stayed on the meta device: rebuild them as transformers' init does.
    reference.model.rotary_emb = type(reference.model.rotary_emb)(hf_config)
    reference.model.embed_tokens.embed_scale = torch.tensor(hf_config.hidden_size**0.5)
    assert not any(t.is_meta for t in [*reference.parameters(), *reference.buffers()])
    return model, tokenizer, reference.eval()


@pytest.mark.slow
def test_real_file_dequantizes_like_gguf():
    from llmlab.formats.gguf import open_gguf
    from llmlab.formats.gguf_quants import dequantize
    from llmlab.registry import resolve

    reader = open_gguf(resolve(GEMMA))
    kinds = {t.tensor_type.name for t in reader.tensors}
    assert kinds == {"F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"}
    seen = set()
    for tensor in reader.tensors:  # one tensor of each type in each of the first two layers
        kind = tensor.tensor_type.name
        if (kind, tensor.name[:5]) in seen or tensor.name == "token_embd.weight":
            continue
        seen.add((kind, tensor.name[:5]))
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        ours = dequantize(tensor.data, kind, shape, tensor.name)
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        assert torch.equal(ours, torch.from_numpy(np.asarray(expected, np.float32))), tensor.name
    assert {k for k, _ in seen} == kinds


def _notes_text() -> str:
    from pathlib import Path

    import llmlab

    root = Path(llmlab.__file__).parent
    return (root / "data/assets/ml-interview-notes.raw.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_real_logits_match_transformers(gemma_real):
    model, tokenizer, reference = gemma_real
    notes_ids = tokenizer.encode(_notes_text())
    assert len(notes_ids) > 1500
    prompts = [
        tokenizer.encode("梯度消失是指在深度网络中，反向传播时"),
        tokenizer.encode("The three primary colors are"),
        notes_ids[:1500],  # past the 512-token window of the sliding layers
    ]
    with torch.no_grad():
        for ids in prompts:
            # Final hidden states at every position, logits at the last 64: the 262k-row head over
            # all 1,500 positions would cost more than the rest of the model on both sides.
            x = torch.tensor([ids])
            hidden = model.model(x)
            expected_hidden = reference.model(x).last_hidden_state
            assert (hidden - expected_hidden).abs().max() <= 1e-3, len(ids)
            assert reference.config.final_logit_softcapping is None  # logits = lm_head(hidden)
            expected = reference.lm_head(expected_hidden[:, -64:])
            diff = (model.logits(hidden[:, -64:]) - expected).abs().max().item()
            assert diff <= 1e-3, (len(ids), diff)


@pytest.mark.slow
def test_real_greedy_generation_matches_transformers_and_engine(gemma_real):
    from llmlab.engine import LLM, SamplingParams

    model, tokenizer, reference = gemma_real
    prompt = tokenizer.encode("什么是梯度消失？梯度消失是指")
    ours = list(generate_token_ids(model, prompt, GenerationConfig(max_tokens=32), set()))
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None
        )[0, len(prompt) :].tolist()
    assert ours == expected
    llm = LLM(model, tokenizer, kv_memory="64MiB")
    out = llm.generate([prompt], SamplingParams(max_tokens=32, temperature=0, ignore_eos=True))
    assert out[0].token_ids == expected


@pytest.mark.slow
def test_real_tokenizer_ids_match_transformers(gemma_real):
    """Against transformers' own GGUF tokenizer conversion, fed the same metadata (its GGUF parse
    of the 262k-token vocabulary alone takes ~20 s; the conversion is what we re-implemented)."""
    from pathlib import Path

    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    import llmlab
    from llmlab.formats.gguf import open_gguf
    from llmlab.registry import resolve

    _, tokenizer, _ = gemma_real
    metadata = open_gguf(resolve(GEMMA)).metadata
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    tokenizer_dict = {
        name: metadata[f"tokenizer.{key}"]
        for key, name in renames.items()
        if f"tokenizer.{key}" in metadata
    }
    backend, _ = convert_gguf_tokenizer("gemma3", tokenizer_dict)
    expected = PreTrainedTokenizerFast(tokenizer_object=backend)
    corpus = _notes_text().split("\n\n")
    bundled = Path(llmlab.__file__).parent / "assets/corpus/notes-zh.txt"
    corpus += bundled.read_text(encoding="utf-8").split("\n\n")[:200]
    corpus += [
        "什么是梯度消失？",
        "def f(x):\n    return x ** 2  # 平方 😀🎉👩‍💻",
        "  two  spaces\n\n\nnewlines\ttab \u00a0nbsp",
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
        "Ünïcödé ½ 𝔘 e\u0301 \u200b ﬁ",
    ]
    total = 0
    for text in corpus:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == expected.encode(text, add_special_tokens=False), text[:60]
        assert tokenizer.decode(ids) == text
        total += len(ids)
    assert total > 50_000
    assert tokenizer.encode("Hi")[0] == tokenizer.bos_token_id == 2
    assert tokenizer.eos_token == "<eos>"
