"""Rejection sampling: n samples per prompt, scored by a rule or a reward model, the best k kept as SFT data.

    llmlab sample best-of-n --prompts bundled:arith.jsonl --n 8 --keep 1 --reward exact_answer --out bon.jsonl
    llmlab train lora --config recipes/sft-lora-smollm2.yaml --set data.train=bon.jsonl   # then SFT on it

Each output line is {"messages": [user, assistant], "reward": r}: the format `train sft` reads.
Sampling runs on the serving engine (16 prompts × n samples per engine batch) when it can run the
model, else on the reference sampler one prompt at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.progress import Progress

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
    from llmlab.errors import LlmlabError
    from llmlab.nn.lora import load_adapter
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
    else:
        score = make_reward(reward)
    prompts = read_prompts(tokenizer, prompts_file, system)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id or 0
    engine = engine_sampler_for(
        model, tokenizer, prompts, max_new_tokens, ENGINE_CHUNK * n
    )  # a chunk per batch
    kept, scores_all = [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("best-of-n", total=len(prompts))
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
                _keep_best(
                    example, group, tokenizer, score, keep, min_reward, system, kept, scores_all
                )
                progress.advance(task)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for row in kept:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "prompts": len(prompts),
        "samples": len(scores_all),
        "kept": len(kept),
        "out": out,
        "mean_reward_all": sum(scores_all) / max(len(scores_all), 1),
        "mean_reward_kept": sum(r["reward"] for r in kept) / max(len(kept), 1),
    }


def _keep_best(
    example, group, tokenizer, score, keep, min_reward, system, kept: list, scores_all: list
):
    """Score one prompt's samples; append its best `keep` (above min_reward) as SFT conversations."""
    texts = group.texts(tokenizer)
    scored = sorted(
        ((score(t, group.completion_ids(i), example), t) for i, t in enumerate(texts)),
        key=lambda pair: -pair[0],
    )
    scores_all += [s for s, _ in scored]
    for value, text in scored[:keep]:
        if min_reward is None or value >= min_reward:
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
