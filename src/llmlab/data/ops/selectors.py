"""Selectors: keep the top-k records by a statistic, or a uniform random sample, in bounded memory
(a heap of k, a reservoir of n); both emit their records when the stream ends."""

from __future__ import annotations

import heapq
import random

from llmlab.data import textstats
from llmlab.data.ops.base import Op, register


def statistic(record: dict, name: str, text_key: str) -> float:
    """A named text statistic of the record, or the numeric value of the field `name`."""
    if name in textstats.STATISTICS:
        return float(textstats.STATISTICS[name](str(record.get(text_key) or "")))
    value = record.get(name)
    if not isinstance(value, (int, float)):
        raise ValueError(f"field {name!r} is missing or not a number")
    return float(value)


class Selector(Op):
    kind = "selector"
    stateless = False


@register("topk_selector")
class TopKSelector(Selector):
    """Keep the k records with the largest (or, with reverse=false, smallest) `stat` (a text statistic or numeric field)."""

    def __init__(self, *, stat: str, k: int, largest: bool = True):
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.stat, self.k, self.largest = stat, k, largest
        self.heap: list[tuple[float, int, dict]] = []
        self.seen = 0

    def process(self, batch, trace):
        for record in batch:
            try:
                value = statistic(record, self.stat, self.text_key)
            except ValueError as exc:
                trace.failed(record, f"{self.name}: {exc}")
                continue
            key = value if self.largest else -value
            # The sequence number breaks ties by arrival order (earlier wins) and keeps dicts uncompared.
            item = (key, -self.seen, record)
            self.seen += 1
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, item)
            else:
                dropped = heapq.heappushpop(self.heap, item)
                trace.removed(dropped[2], {self.stat: dropped[0] if self.largest else -dropped[0]})
        return []

    def finish(self, trace):
        return [r for _, _, r in sorted(self.heap, key=lambda x: (-x[0], -x[1]))]

    def state(self):
        return {"heap": self.heap, "seen": self.seen}

    def load_state(self, state):
        self.heap, self.seen = list(state["heap"]), state["seen"]


@register("random_selector")
class RandomSelector(Selector):
    """Keep a uniform random sample of n records (reservoir sampling, seeded), in arrival order."""

    def __init__(self, *, n: int, seed: int = 0):
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.rng = n, random.Random(seed)
        self.reservoir: list[tuple[int, dict]] = []
        self.seen = 0

    def process(self, batch, trace):
        for record in batch:
            if len(self.reservoir) < self.n:
                self.reservoir.append((self.seen, record))
            else:
                j = self.rng.randrange(self.seen + 1)
                if j < self.n:
                    trace.removed(self.reservoir[j][1], "replaced in reservoir")
                    self.reservoir[j] = (self.seen, record)
                else:
                    trace.removed(record, "not sampled")
            self.seen += 1
        return []

    def finish(self, trace):
        return [r for _, r in sorted(self.reservoir, key=lambda x: x[0])]

    def state(self):
        return {"reservoir": self.reservoir, "seen": self.seen, "rng": self.rng.getstate()}

    def load_state(self, state):
        self.reservoir, self.seen = list(state["reservoir"]), state["seen"]
        self.rng.setstate(state["rng"])
