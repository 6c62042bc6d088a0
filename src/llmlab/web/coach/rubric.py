"""Grading an answer against a rubric made from the reference answer.

The rubric is the reference answer's key points: its sentences (Markdown marks and list numbers
removed), each with its key terms — jieba words of two or more characters (or ASCII words) that
are not stopwords. At most `max_points` points, the ones with the most terms, kept in order.

A user's answer earns each point's credit as the larger of
- term recall: the share of the point's terms that appear in the answer, and
- meaning: the best cosine between the point and one of the answer's sentences under a sentence
  embedder (when one is given), mapped linearly from [low, high] to [0, 1];
a point with credit ≥ 0.5 is hit. The score is 5 × the mean credit, rounded: 0–5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from llmlab.data.textstats import word_list

_MARKS = re.compile(
    r"(\*\*|__|`|^#+\s*|^\s*(?:[-*+]|\d+[.、)]|[一二三四五六七八九十]+、)\s*)", re.M
)
_SENTENCE = re.compile(r"[。！？!?；;\n]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-]*|[\u4e00-\u9fff]+")


def terms(text: str) -> list[str]:
    """Key terms of a text, in order, without repeats."""
    import jieba

    seen, out = set(), []
    stop = word_list("stopwords")
    for token in jieba.lcut_for_search(text):
        token = token.strip().lower()
        if len(token) < 2 or token in stop or not _WORD.fullmatch(token) or token in seen:
            continue
        seen.add(token)
        out.append(token)
    return out


def sentences(text: str) -> list[str]:
    plain = _MARKS.sub("", text)
    return [s.strip(" ，,：:") for s in _SENTENCE.split(plain) if s.strip(" ，,：:")]


@dataclass(frozen=True)
class KeyPoint:
    text: str
    terms: tuple[str, ...]


def _clauses(sentence: str) -> list[str]:
    """A sentence cut at its commas, a clause with too few terms joined to the one before."""
    out: list[str] = []
    for part in re.split(r"[，,]", sentence):
        part = part.strip()
        if out and len(terms(part)) < 2:
            out[-1] += "，" + part
        elif part:
            out.append(part)
    return out


def key_points(answer: str, max_points: int = 6, min_terms: int = 2) -> list[KeyPoint]:
    """The rubric of a reference answer (see the module docstring). A short answer of one or two
    sentences is cut into its clauses, so that it still has several points to check."""
    parts = sentences(answer)
    if len(parts) < 3:
        parts = [c for s in parts for c in _clauses(s)]
    points = [KeyPoint(s, tuple(terms(s))) for s in parts]
    points = [p for p in points if len(p.terms) >= min_terms]
    if len(points) > max_points:
        keep = sorted(range(len(points)), key=lambda i: -len(points[i].terms))[:max_points]
        points = [points[i] for i in sorted(keep)]
    return points


@dataclass
class Grade:
    score: int  # 0–5
    coverage: float  # mean credit over the key points, 0–1
    hit: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    credits: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"score": self.score, "coverage": round(self.coverage, 4), "hit": self.hit,
                "missed": self.missed}  # fmt: skip


class Grader:
    """`embed`: texts → unit-row float array (a sentence embedder), or None for terms only."""

    def __init__(self, embed=None, low: float = 0.5, high: float = 0.85, hit_at: float = 0.5):
        self.embed, self.low, self.high, self.hit_at = embed, low, high, hit_at

    def grade(self, points: list[KeyPoint], answer: str) -> Grade:
        if not points:
            raise ValueError("the reference answer has no key points to grade against")
        text = answer.lower()
        answer_terms = set(terms(answer))
        recall = np.array([
            sum(t in answer_terms or t in text for t in p.terms) / len(p.terms) for p in points
        ])  # fmt: skip
        meaning = np.zeros(len(points))
        parts = sentences(answer)
        if self.embed is not None and parts:
            vectors = self.embed([p.text for p in points] + parts)
            cosine = vectors[: len(points)] @ vectors[len(points) :].T
            meaning = np.clip((cosine.max(axis=1) - self.low) / (self.high - self.low), 0.0, 1.0)
        credits = np.maximum(recall, meaning)
        coverage = float(credits.mean())
        return Grade(
            score=int(round(5 * coverage)),
            coverage=coverage,
            hit=[p.text for p, c in zip(points, credits) if c >= self.hit_at],
            missed=[p.text for p, c in zip(points, credits) if c < self.hit_at],
            credits=[float(c) for c in credits],
        )
