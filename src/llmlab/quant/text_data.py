"""Calibration and evaluation text: one rule for which lines of a corpus file are which.

    lines = split_lines("bundled:stories-en.txt", "heldout")     # the last 10 % of the lines
    ids = calibration_batch(tokenizer, "bundled:stories-en.txt", count=16, length=256)

Every file is split by line number: the first 90 % of its lines are the calibration (train) part,
the last 10 % the held-out part that perplexity is measured on — so calibration never sees the
evaluation text. For the bundled corpora that is stories-en.txt lines 5401–5999 (the last 300
stories) and notes-zh.txt lines 896–994.
"""

from __future__ import annotations

import torch

from llmlab.bundled import resolve_bundled
from llmlab.errors import LlmlabError

HELDOUT_FRACTION = 0.1
SPLITS = ("all", "train", "heldout")


def split_bounds(count: int, split: str) -> tuple[int, int]:
    """[start, end) line indices of a split of a file with `count` lines."""
    if split not in SPLITS:
        raise LlmlabError(f"unknown split '{split}' (all, train, heldout)")
    cut = count - max(1, round(count * HELDOUT_FRACTION))
    return {"all": (0, count), "train": (0, cut), "heldout": (cut, count)}[split]


def split_lines(name: str, split: str = "all") -> list[str]:
    """The lines of a file (`bundled:NAME` or a path) in one split, blank lines kept."""
    path = resolve_bundled(name, "corpus", "text file")
    lines = path.read_text(encoding="utf-8").splitlines()
    start, end = split_bounds(len(lines), split)
    return lines[start:end]


def split_text(name: str, split: str = "all") -> str:
    text = "\n".join(split_lines(name, split)).strip()
    if not text:
        raise LlmlabError(f"{name}: no text in the '{split}' split")
    return text


def calibration_batch(tokenizer, sources: list[str], count: int, length: int) -> torch.Tensor:
    """[count, length] token ids: consecutive windows of the sources' train splits, taken in turn
    from each source (so a mixed English/Chinese calibration set is balanced)."""
    needed = -(-count // len(sources)) * length
    streams = [_leading_tokens(tokenizer, s, needed) for s in sources]
    rows, offsets = [], [0] * len(streams)
    for i in range(count):
        k = i % len(streams)
        ids = streams[k]
        if len(ids) < length:
            raise LlmlabError(f"{sources[k]}: fewer than {length} tokens of calibration text")
        if offsets[k] + length > len(ids):
            offsets[k] = 0
        rows.append(ids[offsets[k] : offsets[k] + length])
        offsets[k] += length
    return torch.tensor(rows)


def _leading_tokens(tokenizer, name: str, needed: int) -> list[int]:
    """Token ids of the start of a file's train split: at least `needed` of them when the split
    has that many (tokenized a few hundred lines at a time, not the whole file)."""
    lines, end = split_lines(name, "train"), 200
    while True:
        ids = tokenizer("\n".join(lines[:end]).strip())["input_ids"]
        if len(ids) >= needed or end >= len(lines):
            return ids
        end *= 2
