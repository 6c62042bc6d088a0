"""Vectorized MinHash signatures, LSH band/row choice from a Jaccard threshold, and SimHash.

Shingles are hashed with a stable polynomial rolling hash over code points (numpy, no Python loop
per shingle), so signatures are identical across processes and runs — needed for exact resume.
A whole batch is shingled at once (`char_shingles_flat`: the batch's texts are concatenated, hashed
in `ngram` vectorized passes, and shingles that straddle two documents are dropped), then signed at
once (`MinHasher.signatures_flat`): for each of the `num_perm` permutations `h -> a*h + b mod 2^32`
(a random odd `a`: a bijection of the 32-bit hashes), one multiply, one add and one
`np.minimum.reduceat` over a cache-sized chunk of contiguous uint32 shingle hashes. Duplicate
shingles inside a document need no removal: the minimum over a multiset is the minimum over its set.

    hasher = MinHasher(128)
    sigs = hasher.sign_texts(["a document", "another document"], ngram=5)   # [2, 128] uint32
    keys = band_keys(sigs, *optimal_bands(0.7, 128))                       # [2, bands] uint64
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from llmlab.data import textstats

_BASE = np.uint64(1_000_003)
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def _rolling_hash32(codes: np.ndarray, n: int) -> np.ndarray:
    """32-bit hash of every n-gram of `codes` (uint64 array), as uint64 values < 2^32."""
    count = len(codes) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):  # n vectorized passes, not one per shingle
            h = h * _BASE + codes[j : count + j]
        h = (h ^ (h >> np.uint64(29))) * _MIX
    return h >> np.uint64(32)


def shingle_hashes(text: str, ngram: int, tokenization: str = "char") -> np.ndarray:
    """Distinct 32-bit hashes of the text's n-grams (characters, or words — jieba for Chinese).

    A text shorter than `ngram` tokens is one shingle; an empty text hashes to [0]."""
    if tokenization == "word":
        codes = np.array([_stable_hash32(w) for w in textstats.words(text)], dtype=np.uint64)
    else:
        codes = textstats.code_points(text).astype(np.uint64)
    if len(codes) == 0:
        return np.zeros(1, dtype=np.uint64)
    return np.unique(_rolling_hash32(codes, min(ngram, len(codes))))


def char_shingles_flat(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 hashes of every character n-gram of every text, start offset of each text's run).

    The same hashes as `shingle_hashes(text, ngram)` per text (with repeats, which MinHash ignores),
    computed for the whole batch in `ngram` numpy passes over the concatenated texts."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if len(texts) == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    if (lengths < ngram).any():  # rare: short texts keep their per-text definition
        parts = [shingle_hashes(t, ngram).astype(np.uint32) for t in texts]
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        return np.concatenate(parts), np.concatenate([[0], np.cumsum(counts)[:-1]])
    hashes = _rolling_hash32(textstats.code_points("".join(texts)).astype(np.uint64), ngram).astype(
        np.uint32
    )
    counts = lengths - ngram + 1
    text_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Position of the k-th kept shingle: its text's start + its index inside the text.
    positions = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(
        text_starts - offsets, counts
    )
    return hashes[positions], offsets


def _stable_hash32(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little")


class MinHasher:
    """`num_perm` permutations `h -> a*h + b mod 2^32` (odd `a`) drawn from a fixed seed."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(
            np.uint32
        ) | np.uint32(1)
        self.b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
        self.num_perm = num_perm

    def signatures(self, shingle_sets: list[np.ndarray], max_rows: int = 1 << 16) -> np.ndarray:
        """[documents, num_perm] uint32 signatures for a batch of shingle-hash arrays (none empty)."""
        if not shingle_sets:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        counts = np.array([len(s) for s in shingle_sets], dtype=np.int64)
        flat = np.concatenate(shingle_sets).astype(np.uint32)
        return self.signatures_flat(flat, np.concatenate([[0], np.cumsum(counts)[:-1]]), max_rows)

    def signatures_flat(
        self, flat: np.ndarray, offsets: np.ndarray, max_rows: int = 1 << 16
    ) -> np.ndarray:
        """Signatures of documents whose uint32 shingle hashes are `flat[offsets[i]:offsets[i+1]]`.

        Documents are taken in groups of about `max_rows` shingles so each permutation's pass stays
        in cache (64k × 4 bytes); inside a group every permutation is one multiply, one add and one
        segmented minimum over contiguous memory — ~20× faster than a [shingles, perms] matrix."""
        docs = len(offsets)
        out = np.empty((docs, self.num_perm), dtype=np.uint32)
        ends = np.append(offsets[1:], len(flat))
        start = 0
        with np.errstate(over="ignore"):
            while start < docs:
                # Largest end with at most max_rows shingles (always at least one document).
                end = max(
                    start + 1, int(np.searchsorted(ends, offsets[start] + max_rows, side="right"))
                )
                lo, hi = int(offsets[start]), int(ends[end - 1])
                chunk = flat[lo:hi]
                local = offsets[start:end] - lo
                tmp = np.empty(hi - lo, dtype=np.uint32)
                block = out[start:end]
                for k in range(self.num_perm):
                    np.multiply(chunk, self.a[k], out=tmp)
                    np.add(tmp, self.b[k], out=tmp)
                    block[:, k] = np.minimum.reduceat(tmp, local)
                start = end
        return out

    def sign_texts(self, texts: list[str], ngram: int, tokenization: str = "char") -> np.ndarray:
        """Signatures of a batch of texts: the batched path for characters, jieba words per text."""
        if tokenization == "char":
            return self.signatures_flat(*char_shingles_flat(texts, ngram))
        return self.signatures([shingle_hashes(t, ngram, tokenization) for t in texts])


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
