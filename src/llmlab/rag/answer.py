"""Answers grounded in retrieved passages, with numbered citations mapped to headings.

    from llmlab.rag.answer import answer_question
    result = answer_question(index, "为什么要做归一化", generate_fn, k=4)
    result.answer       # "… [1] … [2]"
    result.citations    # [{"n": 1, "id": …, "heading": "基础知识点 > 归一化的作用", "cited": True}, …]

`generate_fn(messages) -> str` is any chat model (the CLI and server pass llmlab's). Passage n in
the prompt is hits[n-1], and a citation [n] in the answer names that same passage; numbers the
model invents (beyond the passages it was given) are dropped from `cited`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

SYSTEM = (
    "你是机器学习面试笔记的助手。只根据给出的资料回答问题，用中文简洁作答，"
    "并在用到的句子后用方括号标出资料编号，例如 [1]。资料中没有答案时就说不知道。"
)
_CITATION = re.compile(r"\[(\d+)\]")


@dataclass
class Answer:
    answer: str
    citations: list[dict]
    passages: list = field(default_factory=list)  # the hits given to the model, in order

    def to_dict(self) -> dict:
        return {"answer": self.answer, "citations": self.citations}


def format_passages(hits) -> str:
    """The numbered passages block: [n] heading, then the passage text."""
    return "\n\n".join(f"[{n}] {hit.heading}\n{hit.text}" for n, hit in enumerate(hits, start=1))


def build_messages(question: str, hits, history: list[dict] | None = None) -> list[dict]:
    user = f"资料：\n{format_passages(hits)}\n\n问题：{question}"
    return [
        {"role": "system", "content": SYSTEM},
        *(history or []),
        {"role": "user", "content": user},
    ]


def citations(answer: str, hits) -> list[dict]:
    """Every passage given, numbered as in the prompt, with whether the answer cites it."""
    cited = {int(n) for n in _CITATION.findall(answer)}
    return [
        {
            "n": n,
            "id": hit.id,
            "heading": hit.heading,
            "lines": list(hit.lines),
            "cited": n in cited,
        }
        for n, hit in enumerate(hits, start=1)
    ]


def answer_question(
    index,
    question: str,
    generate_fn: Callable[[list[dict]], str],
    k: int = 4,
    mode: str = "hybrid",
    reranker=None,
) -> Answer:
    hits = index.search(question, k=k, mode=mode, reranker=reranker)
    text = generate_fn(build_messages(question, hits)).strip()
    return Answer(text, citations(text, hits), hits)
