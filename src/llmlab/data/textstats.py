"""Text statistics shared by filters, selectors and `llmlab data analyze`.

Chinese has no spaces, so "words" come from jieba; everything else is plain Python on strings.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from importlib import resources

import numpy as np

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9_']+")
# Python's \w is exactly str.isalnum() plus "_": removing these runs in C leaves only the characters
# that special_char_ratio has to look up one by one.
_WORD_OR_SPACE = re.compile(r"[\w\s]+")


def code_points(text: str) -> np.ndarray:
    """uint32 code point of every character, in one C call (lone surrogates, which JSON can carry,
    pass through as their own values)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@functools.lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict…" chatter
    return jieba


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def words(text: str) -> list[str]:
    """Words of mixed Chinese/English text: jieba for text with CJK characters, else whitespace."""
    if has_cjk(text):
        return [w for w in _jieba().lcut(text) if w.strip() and not _is_punct(w)]
    stripped = (w.strip(".,;:!?\"'()[]{}") for w in text.split())
    return [w for w in stripped if w]


def _is_punct(token: str) -> bool:
    return all(unicodedata.category(c)[0] in "PSZ" for c in token)


def text_length(text: str) -> int:
    return len(text)


def word_count(text: str) -> int:
    return len(words(text))


def alnum_ratio(text: str) -> float:
    """Share of characters that are letters or digits (CJK ideographs count as letters)."""
    return sum(map(str.isalnum, text)) / len(text) if text else 0.0


def special_char_ratio(text: str) -> float:
    """Share of characters that are neither letters, digits, whitespace nor common punctuation."""
    if not text:
        return 0.0
    special = 0
    for c in _WORD_OR_SPACE.sub("", text):  # letters, digits, "_" and spaces are never special
        cat = unicodedata.category(c)
        if cat[0] in "SC" or cat == "Po" and c in "#$%&*@\\^_`|~":
            special += 1
    return special / len(text)


def char_repetition_ratio(text: str, n: int = 10) -> float:
    """Share of character n-gram occurrences that belong to n-grams seen more than once."""
    if len(text) < n:
        return 0.0
    # Slicing out every n-gram as a Python string is the slow part, so each n-gram becomes a 64-bit
    # polynomial hash of its code points, computed for all positions at once; two different n-grams
    # of one document agreeing on 64 bits does not happen at these sizes.
    codes = code_points(text).astype(np.uint64)
    keys = np.zeros(len(codes) - n + 1, dtype=np.uint64)
    for i in range(n):
        keys = keys * np.uint64(0x100000001B3) + codes[i : i + len(keys)]
    keys.sort()
    same_as_next = keys[1:] == keys[:-1]
    repeated = np.zeros(len(keys), dtype=bool)
    repeated[1:] |= same_as_next
    repeated[:-1] |= same_as_next
    return float(repeated.sum()) / len(keys)


def word_repetition_ratio(text: str, n: int = 5) -> float:
    """Share of word n-gram occurrences that belong to n-grams seen more than once."""
    toks = words(text)
    total = len(toks) - n + 1
    if total <= 0:
        return 0.0
    counts = Counter(" ".join(toks[i : i + n]) for i in range(total))
    return (total - sum(1 for c in counts.values() if c == 1)) / total


@functools.lru_cache(maxsize=4)
def word_list(name: str) -> frozenset[str]:
    """A bundled word list from `llmlab/data/assets/<name>.txt` (one word a line)."""
    text = (
        resources.files("llmlab.data").joinpath("assets", f"{name}.txt").read_text(encoding="utf-8")
    )
    return frozenset(
        w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#")
    )


def word_share(text: str, vocabulary: frozenset[str]) -> float:
    toks = words(text)
    return sum(t.lower() in vocabulary for t in toks) / len(toks) if toks else 0.0


def language(text: str) -> tuple[str, float]:
    """(ISO code, confidence in [0, 1]) from langid's bundled model."""
    identifier = _langid()
    code, _ = identifier.classify(text)
    probs = identifier.rank(text)
    return code, float(dict(probs).get(code, 0.0))


@functools.lru_cache(maxsize=1)
def _langid():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


STATISTICS = {
    "text_length": text_length,
    "word_count": word_count,
    "alnum_ratio": alnum_ratio,
    "special_char_ratio": special_char_ratio,
    "char_repetition_ratio": char_repetition_ratio,
    "word_repetition_ratio": word_repetition_ratio,
}
