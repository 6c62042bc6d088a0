"""Rejection sampling: n samples per prompt, scored by a rule or a reward model, the best k kept as SFT data.

    llmlab sample best-of-n --prompts bundled:arith.jsonl --n 8 --keep 1 --reward exact_answer --out bon.jsonl
    llmlab train lora --config recipes/sft-lora-smollm2.yaml --set data.train=bon.jsonl   # then SFT on it

Each output line is {"messages": [user, assistant], "reward": r}: the format `train sft` reads.
Only acceptable samples are kept: by default those that pass the reward's pass/fail rules (for
`exact_answer`, correct answers — see `rewards.py`), or with `min_reward` those scoring at least
that. Of those, the best `keep` per prompt; prompts with none are counted and reported, so a
wrong answer never becomes SFT data. A reward without a pass/fail test (a reward model, only
`length_penalty`) keeps the best `keep` of every prompt, and the summary says so.
Sampling runs on the serving engine (16 prompts × n samples per engine batch) when it can run the
model, else on the reference sampler one prompt at a time; progress goes to stderr (plain lines
when it is not a terminal).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from llmlab.progress import progress_bar

ENGINE_CHUNK = 16  # prompts decoded together on the serving engine (n samples each)


def best_of_n(
    model_name: str,
    prompts_file: str,
    out: str,
    n: int = 4,
    keep: int = 1,
    reward: str = "exact_answer",
    reward_model: str = "",
    min_reward: float | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    system: str | None = None,
    adapter: str = "",
    seed: int = 0,
) -> dict:
    import llmlab
    from llmlab.adapters import load_adapter
    from llmlab.errors import LlmlabError
    from llmlab.posttrain.data import read_prompts
    from llmlab.posttrain.engine_rollout import engine_sampler_for
    from llmlab.posttrain.rewards import make_reward, reward_model_scorer
    from llmlab.posttrain.rollout import sample_groups

    if keep < 1 or n < keep:
        raise LlmlabError(f"need 1 <= keep <= n, got keep={keep}, n={n}")
    model, tokenizer = llmlab.load(model_name, device="cpu", dtype="float32")
    if adapter:
        load_adapter(model, adapter)
    if reward_model:
        from llmlab.posttrain.run import load_reward_model

        score = reward_model_scorer(load_reward_model(reward_model))
        rule, acceptance = None, None
    else:
        score = make_reward(reward)
        rule, acceptance = score.accepts, score.acceptance
    if min_reward is not None:  # an explicit threshold overrides the reward's own test
        acceptance = f"reward >= {min_reward:g}"

    def accepts(text, ids, example, value) -> bool:
        if min_reward is not None:
            return value >= min_reward
        return rule is None or rule(text, ids, example)

    prompts = read_prompts(tokenizer, prompts_file, system)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id or 0
    engine = engine_sampler_for(
        model, tokenizer, prompts, max_new_tokens, ENGINE_CHUNK * n
    )  # a chunk per batch
    kept, scores_all, without = [], [], 0
    with progress_bar("best-of-n", total=len(prompts), unit="prompts") as progress:
        step = ENGINE_CHUNK if engine else 1
        for start in range(0, len(prompts), step):
            chunk = prompts[start : start + step]
            groups = sample_groups(
                model,
                chunk,
                n,
                max_new_tokens,
                temperature,
                tokenizer.eos_token_id,
                pad,
                generator,
                engine,
            )
            for example, group in zip(chunk, groups):
                found = _keep_best(
                    example, group, tokenizer, score, keep, accepts, system, kept, scores_all
                )
                without += found == 0
            progress.advance(len(chunk))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    staged = f"{out}.partial"
    with open(staged, "w", encoding="utf-8") as handle:
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(staged, out)  # a failed run never leaves half a file in place of the last good one
    summary = {
        "prompts": len(prompts),
        "samples": len(scores_all),
        "kept": len(kept),
        "acceptance": acceptance or f"none for this reward: the best {keep} of every prompt",
        "prompts_without_acceptable_sample": without if acceptance else None,
        "out": out,
        "mean_reward_all": sum(scores_all) / max(len(scores_all), 1),
        "mean_reward_kept": sum(r["reward"] for r in kept) / max(len(kept), 1),
    }
    summary["message"] = (
        f"kept {len(kept)} samples from {len(prompts) - without} of {len(prompts)} prompts "
        f"(acceptable: {summary['acceptance']}); {without} prompts had none"
        if acceptance
        else f"kept the best {keep} of each of {len(prompts)} prompts (this reward has no acceptance test; "
        "pass --min-reward to set one)"
    )
    return summary


def _keep_best(
    example, group, tokenizer, score, keep, accepts, system, kept: list, scores_all: list
) -> int:
    """Score one prompt's samples; append its best `keep` acceptable ones as SFT conversations.
    Returns how many were kept."""
    texts = group.texts(tokenizer)
    scored = [(score(t, group.completion_ids(i), example), t, i) for i, t in enumerate(texts)]
    scores_all += [s for s, _, _ in scored]
    scored = [(v, t, i) for v, t, i in scored if accepts(t, group.completion_ids(i), example, v)]
    scored.sort(key=lambda triple: -triple[0])
    for value, text, _ in scored[:keep]:
        user = (
            example["prompt"]
            if isinstance(example["prompt"], str)
            else example["prompt"][-1]["content"]
        )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user},
            {"role": "assistant", "content": text.strip()},
        ]
        kept.append({"messages": messages, "reward": value})
    return min(keep, len(scored))
