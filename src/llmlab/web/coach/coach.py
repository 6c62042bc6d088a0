"""The coach's loop: pick a question, grade an answer, schedule the next review (FSRS).

Picking: with a section, a question of that section (due first, then never seen, then the one
due soonest); without one, spaced repetition over all questions — the most overdue card, else a
question never seen, else the card due soonest. A grade becomes an FSRS rating (score 0–1 Again,
2 Hard, 3–4 Good, 5 Easy), so what was missed comes back sooner."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

from llmlab.errors import LlmlabError
from llmlab.web.coach.bank import DEFAULT_NOTES, Question, load_questions
from llmlab.web.coach.history import History
from llmlab.web.coach.rubric import Grade, Grader, KeyPoint, key_points


def _now() -> datetime:
    return datetime.now(timezone.utc)


def rating_for(score: int):
    from fsrs import Rating

    return (
        Rating.Again
        if score <= 1
        else Rating.Hard
        if score == 2
        else Rating.Easy
        if score == 5
        else Rating.Good
    )


@dataclass
class Result:
    question: Question
    grade: Grade
    next_due: str  # ISO time of the next review

    def to_dict(self) -> dict:
        q = self.question
        return {**self.grade.to_dict(), "question_id": q.id, "reference_answer": q.answer,
                "analysis": q.analysis, "source": q.source, "lines": list(q.lines),
                "next_review": self.next_due}  # fmt: skip


class Coach:
    def __init__(self, notes: str = DEFAULT_NOTES, db=None, embed="default", clock=_now):
        """`embed`: "default" (the notes' own bi-encoder, from their RAG index built with it), a
        callable texts → unit rows, or None (key terms only)."""
        self.questions = list(load_questions(notes))
        if not self.questions:
            raise LlmlabError(f"no questions with reference answers in {notes}")
        self.by_id = {q.id: q for q in self.questions}
        self.history = History(db)
        if embed == "default":
            # The bi-encoder, not the search index's default LM embedder: the rubric's meaning
            # thresholds were calibrated on it (docs/ui.md), and it grades in microseconds.
            from llmlab.rag import default_index

            embed = default_index(embedder="notes-biencoder").embed_queries
        self.grader = Grader(embed)
        self.clock = clock
        from fsrs import Scheduler

        self.scheduler = Scheduler(enable_fuzzing=False)

    def sections(self) -> list[str]:
        return list(dict.fromkeys(q.section for q in self.questions))

    def question(self, question_id: str) -> Question:
        if question_id not in self.by_id:
            raise LlmlabError(f"no question {question_id!r}")
        return self.by_id[question_id]

    def next_question(self, section: str | None = None, exclude: str | None = None) -> Question:
        pool = [
            q
            for q in self.questions
            if (section is None or q.section == section) and q.id != exclude
        ]
        if not pool:
            raise LlmlabError(
                f"no questions in section {section!r}; sections: {', '.join(self.sections())}"
            )
        due = self.history.due_dates()
        now = self.clock().isoformat()
        overdue = sorted(
            (due[q.id], i) for i, q in enumerate(pool) if q.id in due and due[q.id] <= now
        )
        if overdue:
            return pool[overdue[0][1]]
        unseen = [q for q in pool if q.id not in due]
        if unseen:
            return unseen[0]
        return min(pool, key=lambda q: due[q.id])

    def rubric(self, question: Question) -> list[KeyPoint]:
        """Key points of the reference answer, extracted once per question and kept."""
        digest = hashlib.sha1(question.answer.encode()).hexdigest()[:16]
        stored = self.history.rubric(question.id, digest)
        if stored is not None:
            return [KeyPoint(p["text"], tuple(p["terms"])) for p in stored]
        points = key_points(question.answer)
        self.history.save_rubric(
            question.id, digest, [{"text": p.text, "terms": list(p.terms)} for p in points]
        )
        return points

    def grade(self, question_id: str, answer: str) -> Result:
        question = self.question(question_id)
        if not answer.strip():
            raise LlmlabError("the answer is empty")
        grade = self.grader.grade(self.rubric(question), answer)
        from fsrs import Card

        stored = self.history.card(question.id)
        card = Card.from_json(stored) if stored else Card()
        now = self.clock()
        card, _ = self.scheduler.review_card(card, rating_for(grade.score), review_datetime=now)
        due = card.due.isoformat()
        self.history.save_card(question.id, card.to_json(), due)
        self.history.add_review(question.id, question.section, now.isoformat(), grade.score,
                                int(rating_for(grade.score)), answer)  # fmt: skip
        return Result(question, grade, due)

    def progress(self) -> list[dict]:
        """Per section: questions, how many were answered, mastery (mean last score / 5, unseen
        questions count 0) and how many are due now."""
        scores, due, now = (
            self.history.last_scores(),
            self.history.due_dates(),
            self.clock().isoformat(),
        )
        rows = []
        for section in self.sections():
            ids = [q.id for q in self.questions if q.section == section]
            seen = [i for i in ids if i in scores]
            rows.append({
                "section": section, "questions": len(ids), "answered": len(seen),
                "mastery": sum(scores[i] for i in seen) / (5 * len(ids)),
                "due": sum(1 for i in ids if i in due and due[i] <= now),
            })  # fmt: skip
        return rows
