"""Preference pairs and RL prompts from jsonl, tokenized with the model's chat template.

    pairs = read_pairs(tokenizer, "bundled:notes-prefs.jsonl")   # {"prompt", "chosen", "rejected"} lines
    dpo_collate(pairs[:4], pad_id)      # input_ids / completion_mask [2B, T]: chosen rows, then rejected rows
                                        # (+ ref_logps [2B] once precompute_reference_logps filled them)
    reward_collate(pairs[:4], pad_id)   # chosen_ids / rejected_ids [B, T] + lengths (+ margin)
    prompts = read_prompts(tokenizer, "bundled:arith.jsonl")    # {"prompt", "answer"} lines

"prompt" is a string (one user turn) or an OpenAI messages list; completions are plain strings that
end with the tokenizer's EOS (the end-of-turn token in chat templates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.train.sft_data import SFTDataError, read_jsonl


def prompt_ids(tokenizer, prompt, system: str | None = None) -> list[int]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@dataclass
class Pair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    margin: float = 0.0
    ref_chosen: float | None = None  # log πref of the completions, when precomputed (DPO)
    ref_rejected: float | None = None


def read_pairs(
    tokenizer, name: str, system: str | None = None, max_length: int = 512
) -> list[Pair]:
    pairs = []
    for number, row in enumerate(read_jsonl(name), 1):
        if not all(k in row for k in ("prompt", "chosen", "rejected")):
            raise SFTDataError(f"{name}: line {number} needs prompt, chosen and rejected")
        p = prompt_ids(tokenizer, row["prompt"], system)
        room = max(1, max_length - len(p))
        pairs.append(
            Pair(
                p,
                completion_ids(tokenizer, row["chosen"])[:room],
                completion_ids(tokenizer, row["rejected"])[:room],
                float(row.get("margin", 0.0)),
            )
        )
    if not pairs:
        raise SFTDataError(f"{name}: no preference pairs")
    return pairs


def _pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def dpo_collate(pairs: list[Pair], pad_id: int) -> dict:
    rows = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    masks = [[0] * len(p.prompt) + [1] * len(p.chosen) for p in pairs] + [
        [0] * len(p.prompt) + [1] * len(p.rejected) for p in pairs
    ]
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = {
        "input_ids": _pad(rows, pad_id),
        "completion_mask": _pad(masks, 0),
        # the same pairs split, for the prefix-shared forward (train/shared_prefix.py)
        "prompt_ids": _pad([p.prompt for p in pairs], pad_id),
        "prompt_lengths": torch.tensor([len(p.prompt) for p in pairs]),
        "completion_ids": _pad(completions, pad_id),
        "completion_lengths": torch.tensor([len(c) for c in completions]),
    }
    if all(p.ref_chosen is not None for p in pairs):
        batch["ref_logps"] = torch.tensor(
            [p.ref_chosen for p in pairs] + [p.ref_rejected for p in pairs]
        )
    return batch


def reward_collate(pairs: list[Pair], pad_id: int) -> dict:
    chosen = [p.prompt + p.chosen for p in pairs]
    rejected = [p.prompt + p.rejected for p in pairs]
    batch = {
        "chosen_ids": _pad(chosen, pad_id),
        "rejected_ids": _pad(rejected, pad_id),
        "chosen_lengths": torch.tensor([len(r) for r in chosen]),
        "rejected_lengths": torch.tensor([len(r) for r in rejected]),
    }
    if any(p.margin for p in pairs):
        batch["margin"] = torch.tensor([p.margin for p in pairs])
    return batch


def read_prompts(tokenizer, name: str, system: str | None = None) -> list[dict]:
    """RL prompts: each row keeps its fields (e.g. "answer" for rule rewards) plus prompt_ids."""
    rows = read_jsonl(name)
    for number, row in enumerate(rows, 1):
        if "prompt" not in row:
            raise SFTDataError(f"{name}: line {number} has no prompt")
        row["prompt_ids"] = prompt_ids(tokenizer, row["prompt"], system)
    if not rows:
        raise SFTDataError(f"{name}: no prompts")
    return rows


@torch.no_grad()
def precompute_reference_logps(reference, pairs: list, pad_id: int, batch_size: int = 8) -> list:
    """Store log πref(chosen) and log πref(rejected) on every Pair, once, before training.

    `dpo_collate` then puts them in the batch as `ref_logps` and the objective skips the reference
    forward pass each step (a third of DPO's compute; and no frozen copy needs to stay in memory)."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = dpo_collate(chunk, pad_id)
        chosen, rejected = reference.pair_logps(batch).chunk(2)
        for pair, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
            pair.ref_chosen, pair.ref_rejected = c, r
    return pairs
