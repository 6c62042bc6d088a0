"""`rag_pairs`: RAG-style training pairs for the notes assistant, built without a model (issue 19).

For each seed pair of the chosen splits it adds one pair prompted exactly as `llmlab rag ask` prompts
(`llmlab.rag.answer.build_messages`: the grounding system prompt, numbered passages, the question):
the pair's own notes passage (the gold one) at a random position among 1–2 distractor passages taken
from seed pairs of OTHER sections in the SAME split (so no dev/test text enters a train prompt), and
as the answer the reference answer followed by the gold passage's citation marker [n]. The plain
pairs stay. Run it after `split_by_section` and `qa_to_chat` (it writes its own `messages`):

    - split_by_section: {dev: 0.15, test: 0.15, key: section, seed: 0}
    - qa_to_chat: {question: instruction, answer: response, system: "…"}
    - rag_pairs: {splits: [train], distractors: [1, 2], max_chars: 360, seed: 0}

Why: without passages in any training prompt, the SFT model wrote fluent answers that drifted from
the passages it was given and cited no [n] (docs/post-training.md, "Results").
"""

from __future__ import annotations

import hashlib
import random

from llmlab.data.ops.base import HoldAllOp, register
from llmlab.data.ops.instruct import make_pair


def passage_text(record: dict, max_chars: int) -> str:
    """The record's passage, at most max_chars; a long one keeps its answer (the passage ends with it)
    and as much of the analysis before it as fits, so the gold passage always holds the answer."""
    passage = str(record.get("passage") or "").strip()
    if len(passage) <= max_chars:
        return passage
    answer = str(record.get("response") or "").strip()
    room = max_chars - len(answer) - 2
    if answer and answer in passage and room > 0:
        return f"{passage[:room].rstrip()}\n\n{answer}"
    return passage[:max_chars].rstrip()


@register("rag_pairs")
class RagPairs(HoldAllOp):
    """Add a `rag ask`-style pair (gold passage + distractors, answer cites [n]) for each seed pair."""

    kind = "selector"  # needs the other records of the split for its distractors

    def __init__(
        self,
        *,
        splits: list[str] = ("train",),
        distractors: list[int] = (1, 2),
        max_chars: int = 360,
        origin: str = "seed",
        seed: int = 0,
    ):
        bounds = [int(n) for n in distractors]
        if len(bounds) not in (1, 2) or not 0 <= bounds[0] <= bounds[-1]:
            raise ValueError(
                f"distractors must be [n] or [min, max] with 0 ≤ min ≤ max, got {distractors}"
            )
        low, high = bounds[0], bounds[-1]
        if max_chars < 20:
            raise ValueError(f"max_chars must be ≥ 20, got {max_chars}")
        self.splits, self.range = set(splits), (low, high)
        self.max_chars, self.origin, self.seed = max_chars, origin, seed
        super().__init__()

    def rag_pair(self, record: dict, pool: list[dict]):
        from llmlab.rag.answer import build_messages
        from llmlab.rag.index import Hit

        # seeded per record, so the output does not depend on batch boundaries or record order
        rng = random.Random(f"{self.seed}:{record['id']}")
        others = [r for r in pool if r.get("section") != record.get("section")]
        chosen = rng.sample(others, min(len(others), rng.randint(*self.range)))
        gold_at = rng.randint(0, len(chosen))
        passages = chosen[:gold_at] + [record] + chosen[gold_at:]
        hits = [
            Hit(
                str(r["id"]),
                str(r.get("source") or r.get("section")),
                0.0,
                passage_text(r, self.max_chars),
                (0, 0),
            )  # fmt: skip
            for r in passages
        ]
        question = str(record["instruction"])
        response = f"{str(record['response']).rstrip()} [{gold_at + 1}]"
        messages = build_messages(question, hits) + [{"role": "assistant", "content": response}]
        pair = make_pair(
            question,
            response,
            analysis=record.get("analysis", ""),
            passage=hits[gold_at].text,
            section=record.get("section", ""),
            source=record.get("source", ""),
            origin="rag",
            split=record.get("split"),
        )
        # the prompt differs from the plain pair's, so must the id (make_pair hashes only q + a)
        digest = hashlib.sha1(f"rag:{pair['id']}:{gold_at}".encode()).hexdigest()[:16]
        return {**pair, "id": digest, "messages": messages, "gold": gold_at + 1}

    def finish(self, trace):
        usable = [
            r
            for r in self.held
            if r.get("origin") == self.origin
            and r.get("split") in self.splits
            and str(r.get("passage") or "").strip()
        ]
        out = list(self.held)
        for record in usable:
            pool = [r for r in usable if r.get("split") == record.get("split")]
            out.append(self.rag_pair(record, pool))
        self.held = []
        return out
