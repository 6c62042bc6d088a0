"""Retrieval evaluation: recall@k and MRR of an index on questions mapped to gold sections.

    from llmlab.rag.evaluate import load_eval_set, evaluate
    items = load_eval_set(split="dev")                # the bundled set over the notes
    evaluate(index, items, mode="hybrid")             # {"recall@1": …, "recall@5": …, "mrr": …}

Each item is `{"question", "gold" (heading path), "lines" [first, last], "split"}`. A retrieved
chunk answers an item when its line range overlaps the gold section's, so the measure does not
depend on how the chunker cut a section. The rank of an item is that of its first such chunk.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from llmlab.errors import LlmlabError

DEFAULT_EVAL_SET = "bundled:notes-eval.jsonl"
KS = (1, 5, 10)


def load_eval_set(path: str = DEFAULT_EVAL_SET, split: str | None = None) -> list[dict]:
    if path.startswith("bundled:"):
        path = str(resources.files("llmlab") / "assets" / "rag" / path.removeprefix("bundled:"))
    if not Path(path).is_file():
        raise LlmlabError(f"eval set not found: {path}")
    with open(path, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    if split and split != "all":
        items = [item for item in items if item["split"] == split]
    if not items:
        raise LlmlabError(f"no eval items in {path} for split {split!r}")
    return items


def overlaps(lines: tuple[int, int], gold: tuple[int, int] | list[int]) -> bool:
    return lines[0] <= gold[1] and gold[0] <= lines[1]


def gold_rank(index, order: list[int], gold_lines) -> int | None:
    """1-based rank of the first chunk in `order` overlapping the gold lines (None: never)."""
    for rank, i in enumerate(order, start=1):
        if overlaps(index.chunks[i].lines, gold_lines):
            return rank
    return None


def ranking(index, question: str, mode: str, reranker=None, candidates: int = 20) -> list[int]:
    """Every chunk, best first; with a reranker its top `candidates` are reordered by it."""
    order, _ = index.rankings(question, mode)
    if reranker is None:
        return order
    pool = order[:candidates]
    scores = reranker.score(question, [index.chunks[i].index_text() for i in pool])
    return [pool[j] for j in sorted(range(len(pool)), key=lambda j: -scores[j])] + order[
        candidates:
    ]


def evaluate(index, items: list[dict], mode: str = "hybrid", reranker=None, candidates: int = 20):
    """recall@1/5/10 and MRR over `items`, plus the per-question ranks."""
    ranks = []
    for item in items:
        order = ranking(index, item["question"], mode, reranker, candidates)
        ranks.append(gold_rank(index, order, item["lines"]))
    n = len(ranks)
    result = {f"recall@{k}": sum(r is not None and r <= k for r in ranks) / n for k in KS}
    result["mrr"] = sum(1.0 / r for r in ranks if r) / n
    result["n"] = n
    result["ranks"] = ranks
    return result
