"""Batched sampling for RL rollouts: G completions of one prompt at once, sharing a KV cache batch.

    group = sample_group(model, prompt_ids, n=8, max_new_tokens=24, temperature=1.0, eos_id=tok.eos_token_id)
    group.input_ids        # [n, P + max_new_tokens]: prompt, then completion (pad after EOS)
    group.completion_mask  # [n, P + max_new_tokens]: 1 on completion tokens up to and including EOS
    group.texts(tokenizer)

The reference generator (llmlab.generation) decodes one sequence at a time; an RL step wants many
samples of the same prompt, and since they share the prompt they need no padding or masks: one
prefill of the prompt (repeated n times) and one batched decode step per token. When the serving
engine can run the policy, `RolloutSource` samples through it instead (posttrain/engine_rollout.py:
every prompt of the step in one continuous batch, same weights); this path stays as the fallback.
"""

from __future__ import annotations

import torch

from llmlab.models.llama import KVCache
from llmlab.posttrain.engine_rollout import engine_sampler_for
from llmlab.posttrain.group import Group


@torch.no_grad()
def sample_group(
    model,
    prompt_ids: list[int],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> Group:
    was_training = model.training
    model.eval()
    device = model.lm_head.weight.device
    prompt = torch.tensor([prompt_ids] * n, device=device)
    cache = KVCache.for_model(model, batch_size=n, max_length=len(prompt_ids) + max_new_tokens)
    logits = model(prompt, cache)[:, -1]
    tokens, alive = [], torch.ones(n, dtype=torch.bool, device=device)
    masks = []
    for _ in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            token = logits.argmax(-1)
        token = torch.where(alive, token, torch.full_like(token, pad_id))
        tokens.append(token)
        masks.append(alive.clone())
        if eos_id is not None:
            alive &= token != eos_id
        if not alive.any():
            break
        logits = model(token[:, None], cache)[:, -1]
    model.train(was_training)
    completion = torch.stack(tokens, 1)
    mask = torch.stack(masks, 1).long()
    ids = torch.cat([prompt, completion], 1)
    full_mask = torch.cat([torch.zeros_like(prompt), mask], 1)
    return Group(ids, full_mask, len(prompt_ids))


def pad_rows(rows: list[torch.Tensor], pad: int) -> torch.Tensor:
    width = max(r.shape[-1] for r in rows)
    return torch.cat(
        [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=pad) for r in rows]
    )


def sample_groups(
    model,
    prompts: list[dict],
    n: int,
    max_new_tokens: int,
    temperature: float,
    eos_id: int | None,
    pad_id: int,
    generator=None,
    engine=None,
) -> list[Group]:
    """n samples of each prompt dict ("prompt_ids"), one Group per prompt: all in one batch on
    `engine` (an EngineSampler), or one prompt at a time on the reference path when it is None."""
    if engine is not None:
        return engine.sample_groups(
            [p["prompt_ids"] for p in prompts],
            n,
            max_new_tokens,
            temperature,
            eos_id,
            pad_id,
            generator,
        )
    return [
        sample_group(
            model, p["prompt_ids"], n, max_new_tokens, temperature, eos_id, pad_id, generator
        )
        for p in prompts
    ]


@torch.no_grad()
def collect(
    model,
    prompts: list[dict],
    reward_fn,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    eos_id: int | None,
    pad_id: int,
    tokenizer=None,
    generator=None,
    engine=None,
) -> dict:
    """Sample `group_size` completions per prompt and score them.

    prompts: dicts with "prompt_ids" (and whatever the reward function reads, e.g. "answer").
    reward_fn(text, completion_ids, prompt) -> float. `engine`: an EngineSampler (all prompts decode
    in one engine batch); None: the reference path, one prompt's group at a time. Returns
    input_ids / completion_mask [N·G, T] (right-padded) and scores [N·G]."""
    groups = sample_groups(
        model, prompts, group_size, max_new_tokens, temperature, eos_id, pad_id, generator, engine
    )
    ids, masks, scores = [], [], []
    for prompt, group in zip(prompts, groups):
        texts = group.texts(tokenizer) if tokenizer is not None else [""] * group_size
        for row in range(group_size):
            scores.append(float(reward_fn(texts[row], group.completion_ids(row), prompt)))
        ids.append(group.input_ids)
        masks.append(group.completion_mask)
    return {
        "input_ids": pad_rows(ids, pad_id),
        "completion_mask": pad_rows(masks, 0),
        "scores": torch.tensor(scores),
    }


class RolloutSource:
    """Trainer batch source for on-policy RL: every `reuse` steps, draw prompts, sample, score, and let
    `prepare(batch)` add what the objective needs (old log-probs, reference log-probs, advantages).
    Reusing a rollout for several steps is PPO's "epochs": the clipped ratio keeps those updates close."""

    def __init__(
        self,
        model,
        prompts: list[dict],
        reward_fn,
        prepare,
        prompts_per_step: int,
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        eos_id,
        pad_id: int,
        tokenizer=None,
        reuse: int = 1,
        seed: int = 0,
        sampler_model=None,
        use_engine: bool = True,
    ):
        self.model, self.prompts, self.reward_fn, self.prepare = model, prompts, reward_fn, prepare
        self.sampler_model = sampler_model or model
        self.prompts_per_step, self.group_size, self.reuse = prompts_per_step, group_size, reuse
        self.max_new_tokens, self.temperature, self.eos_id, self.pad_id = (
            max_new_tokens,
            temperature,
            eos_id,
            pad_id,
        )
        self.tokenizer = tokenizer
        self.generator = torch.Generator().manual_seed(seed)
        self.cursor, self.used, self.batch = 0, reuse, None
        # The serving engine over the sampler's own weights, when it can run them.
        self.engine = (
            engine_sampler_for(
                self.sampler_model,
                tokenizer,
                prompts,
                max_new_tokens,
                prompts_per_step * group_size,
            )
            if use_engine
            else None
        )

    def next_batch(self) -> dict:
        if self.used >= self.reuse:
            chosen = [
                self.prompts[(self.cursor + i) % len(self.prompts)]
                for i in range(self.prompts_per_step)
            ]
            self.cursor = (self.cursor + self.prompts_per_step) % len(self.prompts)
            batch = collect(
                self.sampler_model,
                chosen,
                self.reward_fn,
                self.group_size,
                self.max_new_tokens,
                self.temperature,
                self.eos_id,
                self.pad_id,
                self.tokenizer,
                self.generator,
                self.engine,
            )
            self.batch, self.used = self.prepare(batch), 0
        self.used += 1
        return self.batch

    def state_dict(self) -> dict:
        """Everything the next batches depend on, so a resumed run samples exactly what an
        uninterrupted one would: the prompt cursor, the sampling RNG, and the rollout still being
        reused (with its old/reference log-probs) and how often it has been."""
        return {
            "cursor": self.cursor,
            "used": self.used,
            "generator": self.generator.get_state(),
            "batch": self.batch if self.used < self.reuse else None,
        }

    def load_state_dict(self, state: dict):
        self.cursor, self.used = state["cursor"], state["used"]
        self.generator.set_state(state["generator"])
        self.batch = state["batch"]
