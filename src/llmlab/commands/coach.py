"""`llmlab coach`: the interview coach in the terminal — a question from the notes, your answer
graded against the reference answer's key points, the model's feedback, the reference answer,
and the next review scheduled by spaced repetition (FSRS).

    llmlab coach                                   # spaced repetition over all sections
    llmlab coach --section 基础知识点               # questions of one section
    llmlab coach --progress                        # mastery per section, then exit
    llmlab coach --no-feedback --db /tmp/coach.sqlite

Type the answer over one or more lines and end it with an empty line. Commands at the prompt:
/skip (another question), /progress, /quit. The history is kept in SQLite in your data directory
(~/.local/share/llmlab/coach.sqlite; --db or LLMLAB_COACH_DB moves it) and shared with the
/coach page of `llmlab serve`.
"""

from __future__ import annotations

import argparse
import sys

from llmlab.cli import common_parser
from llmlab.registry import DEFAULT_CHAT_MODEL


def register(subparsers):
    p = subparsers.add_parser(
        "coach",
        parents=[common_parser()],
        help="interview practice on the notes: graded answers, feedback, spaced repetition",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--section", default=None, help="ask only from this section of the notes")
    p.add_argument(
        "--db", default=None, help="SQLite review history (default: your data directory)"
    )
    p.add_argument(
        "--model",
        default=DEFAULT_CHAT_MODEL,
        help=f"model writing the feedback (default {DEFAULT_CHAT_MODEL})",
    )
    p.add_argument("--no-feedback", action="store_true", help="grade only; no model feedback")
    p.add_argument(
        "--grader",
        choices=["terms+embeddings", "terms"],
        default="terms+embeddings",
        help="match key points by terms and sentence embeddings (default) or by terms only",
    )
    p.add_argument("--progress", action="store_true", help="print mastery per section and exit")
    p.set_defaults(func=run)


def _print_progress(coach) -> None:
    print(f"{'section':<40} {'questions':>9} {'answered':>8} {'mastery':>7} {'due':>4}")
    for s in coach.progress():
        print(
            f"{s['section']:<40} {s['questions']:>9} {s['answered']:>8} {s['mastery']:>6.0%} {s['due']:>4}"
        )


def _read_answer() -> str | None:
    """Lines until an empty one; None at end of input."""
    lines = []
    while True:
        try:
            line = input("> " if not lines else "  ")
        except EOFError:
            return "\n".join(lines) if lines else None
        if not line.strip():
            if lines:
                return "\n".join(lines)
            continue
        lines.append(line)


class _Feedback:
    """The model writing feedback, loaded on first use."""

    def __init__(self, name: str):
        self.name, self.model, self.tokenizer = name, None, None

    def __call__(self, messages: list[dict]) -> str:
        from llmlab.generation import GenerationConfig, generate

        if self.model is None:
            import llmlab

            self.model, self.tokenizer = llmlab.load(self.name)
        prompt = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return generate(
            self.model, self.tokenizer, prompt, GenerationConfig(max_tokens=160, temperature=0.0)
        ).text.strip()


def run(args) -> int:
    from llmlab.web.coach.coach import Coach
    from llmlab.web.coach.feedback import feedback_messages

    coach = Coach(db=args.db, embed="default" if args.grader == "terms+embeddings" else None)
    if args.progress:
        _print_progress(coach)
        return 0
    if args.section and args.section not in coach.sections():
        print(
            f"error: no section {args.section!r}; sections: {', '.join(coach.sections())}",
            file=sys.stderr,
        )
        return 1
    feedback = None if args.no_feedback else _Feedback(args.model)
    last = None
    while True:
        question = coach.next_question(args.section, exclude=last)
        last = question.id
        print(
            f"\n[{question.source}]\n{question.question}\n(answer, then an empty line; /skip /progress /quit)"
        )
        answer = _read_answer()
        if answer is None or answer.strip() == "/quit":
            return 0
        if answer.strip() == "/skip" or not answer.strip():
            continue
        if answer.strip() == "/progress":
            _print_progress(coach)
            continue
        result = coach.grade(question.id, answer)
        grade = result.grade
        print(f"\nscore {grade.score}/5 — next review {result.next_due[:16].replace('T', ' ')} UTC")
        print("covered:\n" + ("\n".join(f"  + {p}" for p in grade.hit) or "  (none)"))
        print("missed:\n" + ("\n".join(f"  - {p}" for p in grade.missed) or "  (none)"))
        if feedback is not None:
            print("feedback:\n  " + feedback(feedback_messages(question, answer, grade)))
        print(
            f"reference answer:\n{question.answer}\n(notes: {question.source}, lines {question.lines[0]}–{question.lines[1]})"
        )
