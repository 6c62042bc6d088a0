"""Rule rewards for RL and best-of-n: functions `(text, completion_ids, example) -> float`.

    exact_answer   1 if the last number in the completion equals example["answer"], else 0
    format         1 if the completion has the shape "... answer is N" (a checkable final answer), else 0
    length_penalty −(tokens / 100): a small push toward short answers

`make_reward("exact_answer+0.2*format")` sums weighted rules. A reward model (a `train reward` run
folder) is used through `reward_model_scorer`.
"""

from __future__ import annotations

import re

import torch

from llmlab.errors import LlmlabError

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def exact_answer(text: str, ids, example: dict) -> float:
    numbers = NUMBER.findall(text.replace(",", ""))
    return float(
        bool(numbers) and "answer" in example and float(numbers[-1]) == float(example["answer"])
    )


def answer_format(text: str, ids, example: dict) -> float:
    return float(re.search(r"answer is\s*-?\d+", text, re.IGNORECASE) is not None)


def length_penalty(text: str, ids, example: dict) -> float:
    return -len(ids) / 100


RULES = {"exact_answer": exact_answer, "format": answer_format, "length_penalty": length_penalty}


def make_reward(spec: str):
    """ "rule" or "w*rule+w*rule" → one reward function."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        weight, _, name = part.rpartition("*")
        if name not in RULES:
            raise LlmlabError(f"unknown reward rule '{name}' (choose {', '.join(RULES)})")
        terms.append((float(weight) if weight else 1.0, RULES[name]))
    return lambda text, ids, example: sum(w * rule(text, ids, example) for w, rule in terms)


def reward_model_scorer(reward_model):
    """Score prompt + completion with a RewardModel (last-token score)."""

    @torch.no_grad()
    def score(text, ids, example) -> float:
        tokens = torch.tensor([list(example["prompt_ids"]) + list(ids)])
        device = next(reward_model.parameters()).device
        return float(
            reward_model(tokens.to(device), torch.tensor([tokens.shape[1]], device=device))[0]
        )

    return score
