"""The engine's packed fast path (fused q/k/v and gate/up, transposed weights, paired rotary) against
the plain path that calls the model's own modules: same logits, same greedy tokens — for float,
bf16, q/k/v-biased, sliding-window, int4/int8 and LoRA-wrapped models; and after the model's weights
change in place, the engine repacks and drops its prefix cache instead of serving stale K/V."""

import copy

import pytest
import torch
from engine_helpers import random_prompts, tiny_model, tiny_tokenizer

from llmlab.engine import LLM, SamplingParams
from llmlab.engine.model_runner import ModelRunner
from llmlab.engine.packed_weights import pair_rotary_order, rotate_pairs_
from llmlab.generation import GenerationConfig, generate
from llmlab.nn.quantized_linear import quantize_model
from llmlab.nn.rotary import RotaryEmbedding, apply_rotary


class _Seq:
    """The few Sequence fields the runner reads."""

    def __init__(self, tokens, table, computed=0):
        self.token_ids, self.block_table, self.num_computed_tokens = tokens, table, computed

    @property
    def num_tokens(self):
        return len(self.token_ids)


def _two_steps(runner: ModelRunner, prompts):
    """A prefill step of every prompt, then one step that mixes decodes with a second chunk."""
    seqs = [_Seq(p, list(range(8 * i, 8 * i + 8))) for i, p in enumerate(prompts)]
    first = runner.run(seqs, [len(p) - 1 for p in prompts])  # leave one token: a decode next
    for s in seqs:
        s.num_computed_tokens = s.num_tokens - 1
    return first, runner.run(seqs, [1] * len(seqs))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(qkv_bias=True, model_type="qwen2"),
        dict(sliding_window=6),
        dict(tie_word_embeddings=True),
    ],
)
def test_packed_logits_equal_plain(overrides):
    model = tiny_model(**overrides)
    if overrides.get("qkv_bias"):
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (
                    layer.self_attn.q_proj,
                    layer.self_attn.k_proj,
                    layer.self_attn.v_proj,
                ):
                    proj.bias.normal_()
    prompts = random_prompts((9, 20, 3))
    packed = _two_steps(ModelRunner(model, num_blocks=32), prompts)
    plain = _two_steps(ModelRunner(model, num_blocks=32, pack_weights=False), prompts)
    for a, b in zip(packed, plain):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_paired_rotary_equals_rotate_half():
    heads, head_dim, positions = 3, 8, torch.tensor([0, 5, 17])
    x = torch.randn(3, heads, head_dim)
    rotary = RotaryEmbedding(head_dim, 10000.0)
    cos, sin = rotary(positions)
    expected = apply_rotary(x.transpose(0, 1), cos, sin).transpose(0, 1)
    order = pair_rotary_order(heads, head_dim)
    paired = x.reshape(3, -1)[:, order].reshape(3, heads, head_dim).clone()
    angles = positions.float()[:, None] * rotary.inv_freq
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    real_form = paired.clone()
    rotate_pairs_(paired, cos, sin, torch.complex(cos, sin))  # eager: one complex multiply
    rotate_pairs_(real_form, cos, sin)  # the form torch.compile gets
    assert torch.allclose(paired.reshape(3, -1), expected.reshape(3, -1)[:, order], atol=1e-6)
    assert torch.allclose(real_form, paired, atol=1e-6)


@pytest.mark.parametrize("setup", ["int4", "int8", "bf16", "lora"])
def test_packed_greedy_equals_plain(setup):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    if setup in ("int4", "int8"):
        quantize_model(model, setup, 32)
    elif setup == "bf16":
        model = model.to(torch.bfloat16)
    else:  # LoRA-wrapped projections are not fused: they are called as they are
        from llmlab.nn.lora import LoraConfig, LoraLinear

        for layer in model.model.layers:
            wrapped = LoraLinear(layer.self_attn.q_proj)
            wrapped.add_adapter("a", LoraConfig(r=4))
            torch.nn.init.normal_(wrapped.lora_B["a"].weight, std=0.1)
            layer.self_attn.q_proj = wrapped
    prompts = random_prompts((4, 23, 40))
    outs = {}
    for pack in (True, False):
        llm = LLM(model, tokenizer, num_kv_blocks=64, pack_weights=pack)
        outs[pack] = [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=10))]
    fused = LLM(model, tokenizer, num_kv_blocks=64).engine.runner.packed.layers[0].qkv
    if setup == "lora":
        assert fused.weight_t is None and fused.quantized is None  # the module-by-module fallback
    else:
        assert (fused.quantized if setup in ("int4", "int8") else fused.weight_t) is not None
    assert outs[True] == outs[False]


def test_weight_update_repacks_and_drops_prefix_cache():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    prompt = random_prompts((40,), seed=3)[0]
    llm = LLM(model, tokenizer, num_kv_blocks=64)
    before = llm.generate([prompt], SamplingParams(max_tokens=8))[0].token_ids
    with torch.no_grad():  # what an optimizer step does: update parameters in place
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    hits = llm.engine.block_manager.prefix_hit_tokens
    after = llm.generate([prompt], SamplingParams(max_tokens=8))[0].token_ids
    assert llm.engine.block_manager.prefix_hit_tokens == hits  # the cached blocks held old K/V
    assert after == generate(model, tokenizer, prompt, GenerationConfig(max_tokens=8)).token_ids
    assert after != before


def test_compiled_decode_equals_eager_without_graph_breaks():
    from torch._dynamo.utils import counters

    model, tokenizer = tiny_model(), tiny_tokenizer()
    prompts = random_prompts((5, 19, 11))
    params = SamplingParams(max_tokens=12)
    eager = LLM(model, tokenizer, num_kv_blocks=64)
    torch._dynamo.reset()
    counters.clear()
    compiled = LLM(model, tokenizer, num_kv_blocks=64, compile=True)  # compiles (and warms up) here
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1 and not counters["graph_break"]  # one graph for the whole decode step
    for prompt in prompts:  # one sequence at a time: the compiled path
        assert (
            compiled.generate([prompt], params)[0].token_ids
            == eager.generate([prompt], params)[0].token_ids
        )
    # A batch of sequences decodes eagerly and gives the same tokens too.
    assert [o.token_ids for o in compiled.generate(prompts, params)] == [
        o.token_ids for o in eager.generate(prompts, params)
    ]
    assert counters["stats"]["unique_graphs"] == graphs  # the growing context did not recompile


def test_compiled_w8a8_decode_equals_eager():
    """Under torch.compile W8A8 layers take the _int_mm path (Inductor cannot lower the prepacked
    oneDNN op; it failed to compile before), with the same scale order as eager."""
    prompt = random_prompts((9,))[0]
    params = SamplingParams(max_tokens=8)
    eager = LLM(tiny_model(), tiny_tokenizer(), num_kv_blocks=64, quant="w8a8")
    torch._dynamo.reset()
    compiled = LLM(tiny_model(), tiny_tokenizer(), num_kv_blocks=64, quant="w8a8", compile=True)
    assert (
        compiled.generate([prompt], params)[0].token_ids
        == eager.generate([prompt], params)[0].token_ids
    )


def test_compiled_decode_follows_weight_updates_and_module_swaps():
    """The compiled step skips the guards on module attributes (they cost a millisecond a step):
    an in-place update must still reach it without a recompile, a swapped module through one."""
    from torch._dynamo.utils import counters

    model, tokenizer = tiny_model(), tiny_tokenizer()
    prompt = random_prompts((13,), seed=5)[0]
    params = SamplingParams(max_tokens=8)
    torch._dynamo.reset()
    counters.clear()
    compiled = LLM(model, tokenizer, num_kv_blocks=64, compile=True, enable_prefix_caching=False)

    def reference():
        return generate(model, tokenizer, prompt, GenerationConfig(max_tokens=8)).token_ids

    assert compiled.generate([prompt], params)[0].token_ids == reference()
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    assert compiled.generate([prompt], params)[0].token_ids == reference()
    assert counters["stats"]["unique_graphs"] == graphs  # same graph, new weights
    norm = copy.deepcopy(model.model.norm)
    with torch.no_grad():
        norm.weight.mul_(-2.0)
    model.model.norm = norm
    assert compiled.generate([prompt], params)[0].token_ids == reference()


def test_compiled_int4_decode_runs_the_native_kernel_and_equals_eager():
    """A sliding window keeps the int4 model off the native decode layer (test_native_decode.py):
    its single-stream steps are compiled, around the native int4 matmul."""
    prompt = random_prompts((9,))[0]
    params = SamplingParams(max_tokens=8)
    window = dict(sliding_window=64)
    eager = LLM(tiny_model(**window), tiny_tokenizer(), num_kv_blocks=64, quant="int4")
    assert eager.engine.runner.packed.layers[0].qkv.quantized.kernel == "native"
    torch._dynamo.reset()
    compiled = LLM(
        tiny_model(**window), tiny_tokenizer(), num_kv_blocks=64, quant="int4", compile=True
    )
    assert compiled.engine.runner.compiled_decode_fn is not None
    assert (
        compiled.generate([prompt], params)[0].token_ids
        == eager.generate([prompt], params)[0].token_ids
    )
