"""Vectorized MinHash signatures, LSH band/row choice from a Jaccard threshold, and SimHash.

Shingles are hashed with a stable polynomial rolling hash over code points (numpy, no Python loop
per shingle), so signatures are identical across processes and runs — needed for exact resume.
One batch of documents is signed at once: all shingle hashes are concatenated, permuted with
multiply-shift hashing `(a*h + b) >> 32` (uint64 arithmetic wraps, which is what we want), and the
per-document minimum is taken with `np.minimum.reduceat`.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from llmlab.data import textstats

_MASK32 = np.uint64(0xFFFFFFFF)
_BASE = np.uint64(1_000_003)


def shingle_hashes(text: str, ngram: int, tokenization: str = "char") -> np.ndarray:
    """Distinct 32-bit hashes of the text's n-grams (characters, or words — jieba for Chinese)."""
    if tokenization == "word":
        codes = np.array([_stable_hash32(w) for w in textstats.words(text)], dtype=np.uint64)
    else:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) == 0:
        return np.zeros(1, dtype=np.uint64)
    n = min(ngram, len(codes))
    h = np.zeros(len(codes) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):  # n vectorized passes, not one per shingle
            h = h * _BASE + codes[j : len(codes) - n + 1 + j]
        h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9)
    return np.unique(h >> np.uint64(32))


def _stable_hash32(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


class MinHasher:
    """`num_perm` multiply-shift permutations drawn from a fixed seed."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signatures(self, shingle_sets: list[np.ndarray], max_rows: int = 1 << 18) -> np.ndarray:
        """[documents, num_perm] uint32 signatures for a batch of shingle-hash arrays.

        Documents are signed in groups of at most `max_rows` shingles so the [shingles, perms]
        product stays bounded (256k × 128 × 8 bytes ≈ 256 MB at worst) whatever the batch holds."""
        out = np.empty((len(shingle_sets), self.num_perm), dtype=np.uint32)
        start = 0
        while start < len(shingle_sets):
            end, rows = start, 0
            while end < len(shingle_sets) and (end == start or rows + len(shingle_sets[end]) <= max_rows):
                rows += len(shingle_sets[end])
                end += 1
            group = shingle_sets[start:end]
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in group])[:-1]])
            flat = np.concatenate(group)
            with np.errstate(over="ignore"):
                permuted = ((flat[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(32)).astype(np.uint32)
            out[start:end] = np.minimum.reduceat(permuted, offsets, axis=0)
            start = end
        return out


@functools.lru_cache(maxsize=32)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted area of false positives below and false negatives above
    the threshold, for the LSH collision probability 1 - (1 - s^r)^b."""
    s_lo = np.linspace(0.0, threshold, 200)
    s_hi = np.linspace(threshold, 1.0, 200)
    best, best_cost = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - s_lo**r) ** b, s_lo)
            fn = np.trapezoid((1 - s_hi**r) ** b, s_hi)
            cost = fp_weight * fp + (1 - fp_weight) * fn
            if cost < best_cost:
                best, best_cost = (b, r), cost
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[documents, bands] uint64 keys, one per band, mixing the band's `rows` values and its index."""
    sig = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            keys = keys * np.uint64(0x100000001B3) + sig[:, :, j]
        keys ^= np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return keys


def simhash(text: str, ngram: int = 3, tokenization: str = "char") -> int:
    """64-bit SimHash: the sign of the sum of ±1 bit vectors of the shingles' 64-bit hashes."""
    h32 = shingle_hashes(text, ngram, tokenization)
    with np.errstate(over="ignore"):
        h64 = (h32 * np.uint64(0x9E3779B97F4A7C15)) ^ (h32 << np.uint64(29))
    bits = ((h64[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.int32)
    votes = (2 * bits - 1).sum(axis=0)
    return int(sum(1 << i for i in range(64) if votes[i] > 0))
