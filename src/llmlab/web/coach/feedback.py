"""The model's feedback on an answer: written with the reference analysis and answer and the
rubric's verdict in its context, in the language of the question."""

from __future__ import annotations

from llmlab.web.coach.bank import Question
from llmlab.web.coach.rubric import Grade

SYSTEM = (
    "You are an interview coach for machine-learning interviews. Give short, concrete feedback on "
    "the candidate's answer: what was right, what was missing or wrong, and one tip. Use the "
    "reference below; do not invent facts. Answer in the language of the question."
)


def feedback_messages(question: Question, answer: str, grade: Grade) -> list[dict]:
    hit = "\n".join(f"- {p}" for p in grade.hit) or "- (none)"
    missed = "\n".join(f"- {p}" for p in grade.missed) or "- (none)"
    user = (
        f"Question: {question.question}\n\n"
        f"Reference analysis:\n{question.analysis[:1500]}\n\n"
        f"Reference answer:\n{question.answer[:1500]}\n\n"
        f"Candidate's answer:\n{answer[:1500]}\n\n"
        f"Rubric score: {grade.score}/5\nKey points covered:\n{hit}\nKey points missed:\n{missed}\n\n"
        "Your feedback (3 sentences at most):"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
