"""The engine on the real packaged SmolLM2-135M-Instruct (slow): greedy chat completions equal the
reference generator's; int4 loaded straight from the Q4_1 GGUF agrees with the float model."""

import pytest
import torch

import llmlab
from llmlab.engine import LLM, SamplingParams
from llmlab.generation import GenerationConfig, generate
from llmlab.tokenize.tokenizer import apply_chat

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def float_model():
    return llmlab.load(MODEL)


def test_engine_matches_reference_on_smollm2(float_model):
    model, tokenizer = float_model
    prompts = [
        apply_chat(tokenizer, [{"role": "user", "content": q}])
        for q in ("What is dropout?", "Name a color.")
    ]
    llm = LLM(model, tokenizer, kv_memory="64MiB")
    outputs = llm.generate(prompts, SamplingParams(max_tokens=16))
    for prompt, out in zip(prompts, outputs):
        assert (
            out.token_ids
            == generate(model, tokenizer, prompt, GenerationConfig(max_tokens=16)).token_ids
        )


def test_int4_from_gguf_agrees_with_float(float_model):
    model, tokenizer = float_model
    from llmlab.nn.quantized_linear import Int4Linear

    llm = LLM(MODEL, quant="int4", kv_memory="64MiB")
    layer = llm.engine.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, Int4Linear)
    # The int4 layer holds exactly the GGUF's weights (the float model is their dequantization).
    reference = model.model.layers[0].self_attn.q_proj.weight
    assert torch.allclose(layer.dequantized_weight(), reference, atol=1e-5)
    prompt = tokenizer.encode("The capital of France is")
    first = llm.generate([prompt], SamplingParams(max_tokens=1))[0].token_ids
    with torch.no_grad():
        assert first == [int(model(torch.tensor([prompt]))[0, -1].argmax())]
