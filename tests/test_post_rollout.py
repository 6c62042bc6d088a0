"""Rollouts through the serving engine give the same greedy tokens as the reference sampler."""

import pytest
import torch
import transformers
from tiny import tiny_llama_config, tiny_tokenizer

from llmlab.models.llama import model_from_hf
from llmlab.nn.lora import add_lora
from llmlab.posttrain.engine_rollout import EngineSampler, engine_supports
from llmlab.posttrain.rollout import RolloutSource, collect, sample_group

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_policy(lora: bool):
    torch.manual_seed(0)
    config = tiny_llama_config(max_position_embeddings=96)
    model = model_from_hf(config.to_dict(), transformers.LlamaForCausalLM(config).state_dict())
    if lora:
        add_lora(model, r=4, alpha=8)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(
                        std=0.2
                    )  # adapters that change the output, so the engine must apply them
    return model.train()


PROMPTS = [[5, 17, 42, 9], [100, 3, 250], [7, 7, 7, 7, 7, 31]]


@pytest.mark.parametrize("lora", [False, True])
def test_engine_greedy_groups_equal_the_reference_path(lora):
    model, tokenizer = tiny_policy(lora), tiny_tokenizer()
    assert engine_supports(model, tokenizer)
    reference = [
        sample_group(model, p, n=2, max_new_tokens=10, temperature=0.0, eos_id=None)
        for p in PROMPTS
    ]
    # Use a token the greedy path emits as "EOS", so stopping (and keeping the EOS) is compared too.
    eos = reference[0].input_ids[0, len(PROMPTS[0]) + 3].item()
    assert tokenizer.eos_token_id not in torch.cat([g.input_ids for g in [*reference]], 1)
    reference = [
        sample_group(model, p, n=2, max_new_tokens=10, temperature=0.0, eos_id=eos) for p in PROMPTS
    ]
    sampler = EngineSampler(model, tokenizer, max_seqs=6, max_tokens_per_seq=20)
    assert sampler.engine.runner.model is model  # the policy's own modules, no copy

    def check(reference):
        groups = sampler.sample_groups(PROMPTS, n=2, max_new_tokens=10, temperature=0.0, eos_id=eos)
        assert model.training  # restored after sampling
        for ref, got in zip(reference, groups):
            width = got.input_ids.shape[1]
            assert torch.equal(got.input_ids, ref.input_ids[:, :width]), (
                got.input_ids,
                ref.input_ids,
            )
            assert torch.equal(got.completion_mask, ref.completion_mask[:, :width])
            assert ref.completion_mask[:, width:].sum() == 0
        return groups

    assert check(reference)[0].completion_ids(0)[-1] == eos  # stopped on EOS and kept it
    with torch.no_grad():  # an optimizer step: the same sampler must now follow the new weights
        for _name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    updated = [
        sample_group(model, p, n=2, max_new_tokens=10, temperature=0.0, eos_id=eos) for p in PROMPTS
    ]
    assert any(not torch.equal(a.input_ids, b.input_ids) for a, b in zip(updated, reference))
    check(updated)


def test_rollout_source_uses_the_engine_and_sampling_is_seeded():
    model, tokenizer = tiny_policy(lora=True), tiny_tokenizer()
    prompts = [{"prompt_ids": p} for p in PROMPTS]
    reward = lambda text, ids, prompt: float(len(ids))  # noqa: E731

    def batch(use_engine):
        source = RolloutSource(
            model,
            prompts,
            reward,
            lambda b: b,
            prompts_per_step=2,
            group_size=3,
            max_new_tokens=6,
            temperature=1.0,
            eos_id=tokenizer.eos_token_id,
            pad_id=0,
            tokenizer=tokenizer,
            seed=5,
            use_engine=use_engine,
        )
        assert (source.engine is not None) == use_engine
        return source.next_batch()

    first, second, fallback = batch(True), batch(True), batch(False)
    assert torch.equal(first["input_ids"], second["input_ids"])  # same seed, same samples
    assert first["input_ids"].shape[0] == fallback["input_ids"].shape[0] == 6
    assert torch.equal(first["scores"], first["completion_mask"].sum(1).float())
    # Sampled completions differ between rows (temperature 1), so the rows are real samples.
    assert len({tuple(r.tolist()) for r in first["input_ids"]}) > 1
    assert collect(model, prompts[:1], reward, 2, 4, 0.0, None, 0)["input_ids"].shape == (
        2,
        len(PROMPTS[0]) + 4,
    )
