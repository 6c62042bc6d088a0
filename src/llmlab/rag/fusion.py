"""Reciprocal rank fusion (Cormack et al., 2009): score(d) = Σ_rankings 1 / (k + rank(d)).

    rrf([[2, 0, 1], [0, 2]])   # -> [(0, 1/61 + 1/62 ...), ...] best first

Ranks are 1-based; a document absent from a ranking gets nothing from it. k = 60 damps the
difference between the first places so that no single ranking dominates; per-ranking weights let
a stronger ranking count more (llmlab's hybrid search weighs BM25 above the dense ranking, chosen
on the dev split: docs/rag.md).
"""

from __future__ import annotations


def rrf(
    rankings: list[list[int]], k: int = 60, weights: list[float] | None = None
) -> list[tuple[int, float]]:
    """Fused (doc, score) pairs, best first; ties keep the order of first appearance.

    `weights` scales each ranking's share (weighted RRF); None gives every ranking weight 1."""
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
