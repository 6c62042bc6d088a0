"""The native single-stream decode layer (nn/csrc/decode_layer.cpp through engine/native_decode.py)
against the runner's op-by-op packed path on the same int4 or W8A8 model (symmetric, or
asymmetric and smoothed): the same logits up to float rounding, the same K/V written to the cache,
the same greedy tokens; after in-place weight updates too; where it applies and where it does
not; its input checks."""

import copy

import pytest
import torch
from engine_helpers import random_prompts, tiny_model, tiny_tokenizer
from test_gemma3 import ours_from, tiny_hf_gemma

from llmlab.engine import LLM, SamplingParams
from llmlab.engine.model_runner import ModelRunner
from llmlab.nn import native
from llmlab.nn.quantized_linear import W8A8Linear, quantize_model

KINDS = ["int4", "w8a8", "w8a8-asym-smooth"]


def _quantize(model, kind):
    if kind != "w8a8-asym-smooth":
        return quantize_model(model, kind)
    for name, linear in list(model.named_modules()):
        if isinstance(linear, torch.nn.Linear):
            parent, _, child = name.rpartition(".")
            # one smoothing per input width: q/k/v (and gate/up) share theirs, as calibrated ones do
            g = torch.Generator().manual_seed(linear.in_features)
            smooth = torch.rand(linear.in_features, generator=g) + 0.5
            layer = W8A8Linear.from_weight(linear.weight, smooth=smooth, asymmetric=True)
            setattr(model.get_submodule(parent), child, layer)
    return model


class _Seq:
    def __init__(self, tokens, table):
        self.token_ids, self.block_table, self.num_computed_tokens = tokens, table, 0

    @property
    def num_tokens(self):
        return len(self.token_ids)


def _runners(model):
    """Two runners on one quantized model: the native decode layer, and the op-by-op path."""
    fast, plain = ModelRunner(model, num_blocks=16), ModelRunner(model, num_blocks=16)
    assert fast.native_decode is not None
    plain.native_decode = None
    return fast, plain


def _tiny(architecture: str, seed: int):
    """A tiny Llama (vocab 320) or Gemma 3 (vocab 160, sliding window 8)."""
    if architecture == "gemma3":
        return ours_from(tiny_hf_gemma(seed=seed)), 160
    return tiny_model(seed), 320


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("architecture,seed", [("llama", 0), ("llama", 3), ("gemma3", 5)])
def test_native_decode_steps_equal_op_by_op(architecture, seed, kind):
    """Both paths round each product's input (to bfloat16 for int4, to a per-token int8 grid for
    W8A8), so a float-rounding difference upstream (rotary, softmax, SiLU) now and then flips one
    input's rounding: an output then moves by one grid step times a weight (~0.4 % of the largest
    logit for bfloat16, a few % for an int8 grid). Most steps agree to float rounding."""
    flip = 1e-2 if kind == "int4" else 5e-2
    model, vocab = _tiny(architecture, seed)
    fast, plain = _runners(_quantize(model, kind))
    prompt = random_prompts((11,), seed=seed, vocab=vocab)[0]
    seqs = [_Seq(list(prompt), list(range(16))) for _ in range(2)]
    errors = []
    with torch.inference_mode():
        first = [r.run([s], [len(prompt)]) for r, s in zip((fast, plain), seqs)]  # prefill: ops
        assert torch.equal(first[0], first[1])
        token = int(first[1].argmax())
        for _ in range(24):  # past the first 16-token block (and Gemma's window of 8)
            position = len(seqs[0].token_ids)
            logits = []
            for runner, seq in zip((fast, plain), seqs):
                seq.num_computed_tokens = position
                seq.token_ids.append(token)
                logits.append(runner.run([seq], [1]))
            errors.append(float((logits[0] - logits[1]).abs().max() / logits[1].abs().max()))
            for cache_fast, cache_plain in zip(fast.kv_cache, plain.kv_cache):
                written = cache_plain[position]
                assert (cache_fast[position] - written).abs().max() <= flip * written.abs().max()
            token = int(logits[1].argmax())  # both follow the op-by-op path's greedy pick
    errors.sort()
    assert errors[-1] <= flip and errors[len(errors) // 2] <= 1e-5, errors


@pytest.mark.parametrize("kind", KINDS)
def test_native_decode_greedy_tokens_equal_and_follow_weight_updates(kind):
    model, tokenizer = _quantize(tiny_model(), kind), tiny_tokenizer()
    prompt = random_prompts((9,), seed=4)[0]
    params = SamplingParams(max_tokens=16)
    models = [model, copy.deepcopy(model)]
    fast, plain = (LLM(m, tokenizer, num_kv_blocks=64, enable_prefix_caching=False) for m in models)
    assert fast.engine.runner.native_decode is not None
    plain.engine.runner.native_decode = None

    def same():
        return (
            fast.generate([prompt], params)[0].token_ids
            == plain.generate([prompt], params)[0].token_ids
        )

    assert same()
    before = fast.generate([prompt], params)[0].token_ids
    with torch.no_grad():  # in place, in both models: the runner repacks (sync_weights)
        for m in models:
            for norm in (
                m.model.layers[0].input_layernorm,
                m.model.layers[1].post_attention_layernorm,
            ):
                norm.weight.mul_(-3.0)
    plain.engine.runner.sync_weights()
    plain.engine.runner.native_decode = None
    assert same()
    assert fast.generate([prompt], params)[0].token_ids != before


@pytest.mark.parametrize(
    "case",
    ["float", "int8", "bf16", "sliding_window", "qkv_bias", "unpacked", "w8a8_static"],
)
def test_native_decode_applies_only_to_packed_float32_quantized_llamas(case):
    overrides = dict(
        sliding_window=dict(sliding_window=64), qkv_bias=dict(qkv_bias=True, model_type="qwen2")
    ).get(case, {})
    model = tiny_model(**overrides)
    if case == "int8":
        quantize_model(model, case)
    elif case == "w8a8_static":
        model.model.layers[1].mlp.down_proj = W8A8Linear.from_linear(
            model.model.layers[1].mlp.down_proj, input_scale=0.05
        )
        quantize_model(model, "w8a8")  # every other linear dynamic: one static layer is enough
    elif case != "float":
        quantize_model(model, "int4")
    if case == "bf16":
        model = model.to(torch.bfloat16)
    runner = ModelRunner(model, num_blocks=8, pack_weights=case != "unpacked")
    assert runner.native_decode is None


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_native_decode_takes_int4_and_w8a8_models(architecture):
    for kind in KINDS:
        model = _quantize(_tiny(architecture, 0)[0], kind)
        runner = ModelRunner(model, num_blocks=8)
        assert runner.native_decode is not None
        windows = runner.native_decode.windows
        assert windows == [8 if local else None for local in runner.layer_is_local]


def test_enable_compile_leaves_native_decode_uncompiled():
    runner = ModelRunner(quantize_model(tiny_model(), "int4"), num_blocks=8)
    runner.enable_compile()
    assert runner.compile_requested and runner.compiled_decode_fn is None


def test_decode_layer_rejects_bad_inputs():
    runner = ModelRunner(quantize_model(tiny_model(), "int4"), num_blocks=4)
    nd = runner.native_decode
    norms, eps, weights, kinds, options = nd.layers[0]
    half = runner.config.head_dim // 2
    cos, sin = torch.ones(half), torch.zeros(half)

    def call(x=None, slot=0, context=None, weights=weights, kinds=kinds, norms=norms):
        native.decode_layer(
            torch.zeros(1, runner.config.hidden_size) if x is None else x,
            runner.kv_cache[0], norms, eps, weights, kinds, options, cos, sin, slot,
            torch.arange(3) if context is None else context, nd.heads, nd.kv_heads, nd.scale,
        )  # fmt: skip

    call()  # well-formed: runs
    with pytest.raises(RuntimeError, match="one contiguous float32 row"):
        call(x=torch.zeros(2, runner.config.hidden_size))
    with pytest.raises(RuntimeError, match="slot out of range"):
        call(slot=10_000)
    with pytest.raises(RuntimeError, match="context slot 99999 out of range"):
        call(context=torch.tensor([0, 99_999]))
    with pytest.raises(RuntimeError, match="int64 slots"):
        call(context=torch.arange(3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="L ≥ 1"):
        call(context=torch.arange(0))
    with pytest.raises(RuntimeError, match="projection kind 7"):
        call(kinds=[7, 0, 0, 0])
    with pytest.raises(RuntimeError, match="too few weight tensors"):
        call(weights=weights[:-1])
    with pytest.raises(RuntimeError, match="more weight tensors"):
        call(weights=[*weights, weights[0]])
    with pytest.raises(RuntimeError, match=r"2 norms \(Llama\) or 6 \(Gemma 3\), got 3"):
        call(norms=[*norms, norms[0]])
