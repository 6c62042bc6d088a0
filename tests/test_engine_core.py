"""The serving engine against the reference generator: greedy outputs are identical for batches
of mixed-length prompts, with chunked prefill, with preemption forced by a tiny KV pool, with
prefix-cache hits; and every KV block is free again once requests finish or are aborted."""

import pytest
import torch
from engine_helpers import random_prompts, tiny_model, tiny_tokenizer

from llmlab.engine import LLM, LLMEngine, SamplingParams
from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.generation import GenerationConfig, generate

LENGTHS = (1, 5, 17, 33, 40, 64, 3, 90)


@pytest.fixture(scope="module")
def setup():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    prompts = random_prompts(LENGTHS)
    results = [generate(model, tokenizer, p, GenerationConfig(max_tokens=24)) for p in prompts]
    return model, tokenizer, prompts, results


def all_blocks_free(engine: LLMEngine) -> bool:
    bm = engine.block_manager
    return bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


@pytest.mark.parametrize(
    "options",
    [
        dict(num_kv_blocks=256),  # everything fits: whole prompts prefilled in one step
        dict(num_kv_blocks=256, max_num_batched_tokens=16),  # chunked prefill mixed with decodes
        dict(num_kv_blocks=256, max_num_seqs=3),  # admission limited by max_num_seqs
    ],
)
def test_greedy_batch_equals_reference(setup, options):
    model, tokenizer, prompts, results = setup
    llm = LLM(model, tokenizer, **options)
    outputs = llm.generate(prompts, SamplingParams(max_tokens=24))
    assert [o.token_ids for o in outputs] == [r.token_ids for r in results]
    assert [o.text for o in outputs] == [r.text for r in results]
    assert all_blocks_free(llm.engine)


def test_greedy_equals_reference_under_preemption(setup):
    model, tokenizer, prompts, results = setup
    reference = [r.token_ids for r in results]
    llm = LLM(
        model, tokenizer, num_kv_blocks=10, max_num_batched_tokens=32
    )  # 160 tokens for 8 prompts
    outputs = llm.generate(prompts, SamplingParams(max_tokens=24))
    assert llm.engine.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outputs] == reference
    assert all_blocks_free(llm.engine)


def test_shared_prefix_hits_cache_with_identical_output(setup):
    model, tokenizer, _, _ = setup
    first, second = random_prompts((50, 7), seed=5)
    second = first[:40] + second  # shares two full 16-token blocks with the first prompt
    llm = LLM(model, tokenizer, num_kv_blocks=64)
    llm.generate([first], SamplingParams(max_tokens=8))
    before = llm.engine.block_manager.prefix_hit_tokens
    out = llm.generate([second], SamplingParams(max_tokens=12))[0]
    assert llm.engine.block_manager.prefix_hit_tokens - before == 32
    assert (
        out.token_ids
        == generate(model, tokenizer, second, GenerationConfig(max_tokens=12)).token_ids
    )
    assert all_blocks_free(llm.engine)


def test_no_prefix_caching_means_no_hits(setup):
    model, tokenizer, _, _ = setup
    prompt = random_prompts((40,), seed=6)[0]
    llm = LLM(model, tokenizer, num_kv_blocks=64, enable_prefix_caching=False)
    llm.generate([prompt, prompt], SamplingParams(max_tokens=4))
    assert llm.engine.block_manager.prefix_hit_tokens == 0


def test_aborted_requests_free_their_blocks(setup):
    model, tokenizer, prompts, results = setup
    engine = LLMEngine(model, tokenizer, num_kv_blocks=64, max_num_batched_tokens=32)
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, SamplingParams(max_tokens=24))
    for _ in range(3):
        engine.step()
    assert engine.block_manager.num_used_blocks > 0
    assert engine.abort("r1") and engine.abort("r6") and not engine.abort("missing")
    finished = {}
    while engine.has_unfinished():
        finished.update({o.request_id: o for o in engine.step() if o.finished})
    assert "r1" not in finished and "r6" not in finished
    assert finished["r0"].token_ids == results[0].token_ids
    assert all_blocks_free(engine)


def test_n_completions_share_prompt_blocks(setup):
    model, tokenizer, _, _ = setup
    prompt = random_prompts((45,), seed=7)[0]
    llm = LLM(model, tokenizer, num_kv_blocks=64)
    out = llm.generate([prompt], SamplingParams(n=3, max_tokens=10, temperature=1.0, seed=3))[0]
    assert len(out.outputs) == 3 and len({tuple(o.token_ids) for o in out.outputs}) > 1
    assert (
        llm.engine.block_manager.prefix_hit_tokens == 2 * 32
    )  # two siblings reuse 2 full blocks each
    again = llm.generate([prompt], SamplingParams(n=3, max_tokens=10, temperature=1.0, seed=3))[0]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in out.outputs]  # seeded
    assert all_blocks_free(llm.engine)


def test_string_prompts_stop_strings_and_stop_ids(setup):
    model, tokenizer, _, _ = setup
    llm = LLM(model, tokenizer, num_kv_blocks=64)
    text = "The quick brown fox"
    full = llm.generate(text, SamplingParams(max_tokens=20))[0]
    assert (
        full.token_ids
        == generate(model, tokenizer, text, GenerationConfig(max_tokens=20)).token_ids
    )
    assert full.outputs[0].finish_reason == "length" and len(full.token_ids) == 20
    stop_id = full.token_ids[5]
    cut = llm.generate(text, SamplingParams(max_tokens=20, stop_token_ids=[stop_id]))[0]
    assert (
        cut.token_ids == full.token_ids[: full.token_ids.index(stop_id)]
        and cut.outputs[0].finish_reason == "stop"
    )
    stop = full.text[len(full.text) // 2 :][:3]
    if stop.strip():
        cut = llm.generate(text, SamplingParams(max_tokens=20, stop=[stop]))[0]
        assert (
            cut.text == full.text[: full.text.index(stop)]
            and cut.outputs[0].finish_reason == "stop"
        )


def test_logprobs_are_the_models(setup):
    model, tokenizer, _, _ = setup
    prompt = random_prompts((12,), seed=8)[0]
    llm = LLM(model, tokenizer, num_kv_blocks=64)
    out = llm.generate([prompt], SamplingParams(max_tokens=3, logprobs=4))[0].outputs[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids]))[0, len(prompt) - 1 : -1].log_softmax(
            -1
        )
    for step, entry in enumerate(out.logprobs):
        assert entry["token_id"] == out.token_ids[step]
        assert abs(entry["logprob"] - float(logits[step, entry["token_id"]])) < 1e-4
        top_ids = [t for t, _ in entry["top"]]
        assert top_ids == torch.topk(logits[step], 4).indices.tolist()


def test_prompt_too_long_and_bad_params(setup):
    model, tokenizer, _, _ = setup
    engine = LLMEngine(model, tokenizer, num_kv_blocks=64)
    with pytest.raises(ContextLengthError):
        engine.add_request("long", [5] * 256, SamplingParams())
    with pytest.raises(LlmlabError):
        SamplingParams(top_p=0)
    with pytest.raises(LlmlabError):
        SamplingParams(presence_penalty=3)


def test_llm_loads_a_model_folder_by_path(tmp_path):
    from tiny import save_tiny_llama

    import llmlab

    save_tiny_llama(tmp_path / "m", initializer_range=0.3)
    model, tokenizer = llmlab.load(tmp_path / "m")
    llm = LLM(str(tmp_path / "m"), num_kv_blocks=32)
    out = llm.generate(["Dropout randomly"], SamplingParams(max_tokens=8))[0]
    assert (
        out.token_ids
        == generate(model, tokenizer, "Dropout randomly", GenerationConfig(max_tokens=8)).token_ids
    )
