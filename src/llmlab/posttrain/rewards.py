"""Rule rewards for RL and best-of-n: functions `(text, completion_ids, example) -> float`.

    exact_answer   1 if the last number in the completion equals example["answer"], else 0
    format         1 if the completion has the shape "... answer is N" (a checkable final answer), else 0
    length_penalty −(tokens / 100): a small push toward short answers
    program_answer 1 if the completion's program, run in the sandbox, prints example["answer"]
                   last (alias pot_sandbox): the verifier for program-of-thought training data

`make_reward("exact_answer+0.2*format")` sums weighted rules. A reward model (a `train reward` run
folder) is used through `reward_model_scorer`.

Acceptance (rejection sampling keeps only acceptable samples): a sample is acceptable when every
pass/fail rule in the spec with a positive weight passes — for `exact_answer`, a correct answer;
for `exact_answer+0.2*format`, correct and in the checkable format. A spec without pass/fail rules
(only `length_penalty`) and a reward model have no acceptance test (`reward.accepts is None`).
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=8192)
def _program_output(completion: str) -> str | None:
    # Reward.accepts scores a sample a second time, and samples repeat: run each program once.
    from llmlab.agents.reasoning import program_answer

    return program_answer(completion)


def program_answer(text: str, ids, example: dict) -> float:
    """The completion's code block (else the whole completion) runs in llmlab.agents.sandbox, a
    separate locked-down process — model-written code never runs here; the last number it prints
    must equal the answer."""
    from llmlab.agents.reasoning import normalize

    if "answer" not in example:
        return 0.0
    printed = _program_output(text)
    return float(printed is not None and printed == normalize(example["answer"]))


RULES = {
    "exact_answer": exact_answer,
    "format": answer_format,
    "length_penalty": length_penalty,
    "program_answer": program_answer,
    "pot_sandbox": program_answer,
}
PASS_FAIL = {
    "exact_answer": "a correct answer",
    "format": "the checkable answer format",
    "program_answer": "a program that prints the correct answer in the sandbox",
    "pot_sandbox": "a program that prints the correct answer in the sandbox",
}


class Reward:
    """A weighted sum of rules, callable as `(text, ids, example) -> float`; `accepts` is None or a
    predicate `(text, ids, example) -> bool`, and `acceptance` says in words what it demands."""

    def __init__(self, terms: list[tuple[float, str]]):
        self.terms = terms
        required = [name for weight, name in terms if weight > 0 and name in PASS_FAIL]
        self.acceptance = " and ".join(PASS_FAIL[name] for name in required) or None
        self.accepts = (
            (lambda text, ids, example: all(RULES[n](text, ids, example) == 1.0 for n in required))
            if required
            else None
        )

    def __call__(self, text, ids, example) -> float:
        return sum(w * RULES[name](text, ids, example) for w, name in self.terms)


def make_reward(spec: str) -> Reward:
    """ "rule" or "w*rule+w*rule" → one reward function."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        weight, _, name = part.rpartition("*")
        if name not in RULES:
            raise LlmlabError(f"unknown reward rule '{name}' (choose {', '.join(RULES)})")
        terms.append((float(weight) if weight else 1.0, name))
    return Reward(terms)


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
