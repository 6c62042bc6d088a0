"""The coach's questions: every question of the notes that has a reference answer, with its
analysis, its section and where it sits in the notes (heading path and lines, so the page can
link to it). Built with the data system's `markdown_to_qa` operator over the bundled notes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from llmlab.rag.store import DEFAULT_NOTES, read_document


@dataclass(frozen=True)
class Question:
    id: str
    section: str
    question: str
    analysis: str
    answer: str
    source: str  # heading path, e.g. "基础知识点 > 归一化的作用"
    lines: tuple[int, int]  # first and last line in the notes


@lru_cache(maxsize=4)
def load_questions(notes: str = DEFAULT_NOTES) -> tuple[Question, ...]:
    from llmlab.data.ops.markdown_qa import qa_records

    text, _ = read_document(notes)
    records = qa_records(text)
    questions = []
    for r in records:
        answer = (r.get("answer") or "").strip()
        if not answer or not (r.get("question") or "").strip():
            continue
        lines = tuple(r.get("lines") or (0, 0))
        questions.append(
            Question(
                id=str(r["id"]),
                section=r.get("section") or r["source"].split(" > ")[0],
                question=r["question"].strip(),
                analysis=(r.get("analysis") or "").strip(),
                answer=answer,
                source=r["source"],
                lines=(int(lines[0]), int(lines[-1])),
            )
        )
    return tuple(questions)
