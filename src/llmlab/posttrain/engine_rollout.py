"""RL rollouts on the serving engine (paged KV cache, continuous batching), sharing the policy's weights.

    sampler = EngineSampler(policy, tokenizer, max_seqs=8, max_tokens_per_seq=96)   # once per run
    groups = sampler.sample_groups([prompt_ids, ...], n=4, max_new_tokens=16, temperature=1.0,
                                   eos_id=tok.eos_token_id, pad_id=0, generator=g)  # one Group per prompt

The engine's model runner calls the policy's own modules (LoRA layers included), so each rollout
sees the current weights without a copy or a reload; only its KV pool is allocated once. All
prompts of a step (and their n samples, which share the prompt's KV blocks) decode together in
one batch. Prefix caching is off: cached blocks would hold keys/values of older weights.
Completions that stop on EOS keep the EOS token, as in `rollout.sample_group` (the reference
path, which `collect` falls back to for models the engine cannot run).
"""

from __future__ import annotations

import itertools
import math

import torch

from llmlab.models.llama import LlamaForCausalLM
from llmlab.posttrain.group import Group


def engine_supports(model, tokenizer) -> bool:
    """The engine runs llmlab Llama decoders and needs a tokenizer (it detokenizes as it goes)."""
    return isinstance(model, LlamaForCausalLM) and tokenizer is not None


def engine_sampler_for(model, tokenizer, prompts: list[dict], max_new_tokens: int, max_seqs: int):
    """An EngineSampler sized for these prompts ({"prompt_ids": …} dicts) and `max_seqs` sequences at
    once, or None when the engine cannot run the model (callers then take the reference path)."""
    if not engine_supports(model, tokenizer):
        return None
    longest = max(len(p["prompt_ids"]) for p in prompts) + max_new_tokens
    return EngineSampler(model, tokenizer, max_seqs, longest)


class EngineSampler:
    def __init__(
        self, model, tokenizer, max_seqs: int, max_tokens_per_seq: int, block_size: int = 16
    ):
        from llmlab.engine import LLMEngine

        self.model = model
        blocks = max_seqs * (
            math.ceil(max_tokens_per_seq / block_size) + 1
        )  # room for every sequence at once
        # pack_weights=False: the packed fast path keeps its own copy of the weights and re-copies it
        # whenever they change, i.e. after every optimizer step here; call the policy's modules instead.
        self.engine = LLMEngine(
            model,
            tokenizer,
            max_num_seqs=max_seqs,
            block_size=block_size,
            num_kv_blocks=blocks,
            enable_prefix_caching=False,
            pack_weights=False,
        )
        self._ids = itertools.count()

    @torch.no_grad()
    def sample_groups(
        self,
        prompts: list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        eos_id: int | None = None,
        pad_id: int = 0,
        generator: torch.Generator | None = None,
    ) -> list[Group]:
        from llmlab.engine import SamplingParams

        was_training = self.model.training
        self.model.eval()  # no LoRA dropout while sampling
        order = []
        for prompt in prompts:
            seed = (
                int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                if generator is not None
                else None
            )
            params = SamplingParams(
                n=n,
                max_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                stop_token_ids=[eos_id] if eos_id is not None else [],
            )
            request_id = f"rollout-{next(self._ids)}"
            self.engine.add_request(request_id, list(prompt), params)
            order.append(request_id)
        finished = {}
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        finished[out.request_id] = out
        finally:
            self.model.train(was_training)
        return [
            self._group(prompt, finished[r], eos_id, pad_id) for prompt, r in zip(prompts, order)
        ]

    @staticmethod
    def _group(prompt: list[int], out, eos_id, pad_id) -> Group:
        completions = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            ids = list(c.token_ids)
            if c.finish_reason == "stop" and eos_id is not None:
                ids.append(
                    eos_id
                )  # the engine drops the stop token; the policy still learns to emit it
            completions.append(ids)
        width = max(1, max(len(c) for c in completions))
        rows = torch.tensor([prompt + c + [pad_id] * (width - len(c)) for c in completions])
        mask = torch.tensor(
            [[0] * len(prompt) + [1] * len(c) + [0] * (width - len(c)) for c in completions]
        )
        return Group(rows, mask, len(prompt))
