"""The interview coach: a question from the notes, the user's answer graded against a rubric from
the reference answer, feedback written by the model, and spaced repetition of what was missed.

    from llmlab.web.coach import Coach
    coach = Coach()                                  # the bundled notes; history in the user's data dir
    question = coach.next_question()                 # due for review, else new (or by section)
    result = coach.grade(question.id, "归一化让每层输入的分布稳定……")
    result.score, result.hit, result.missed          # 0–5 and the key points hit / missed

`llmlab coach` runs it in the terminal; `llmlab serve` shows it at /coach. See docs/ui.md.
"""

from llmlab.web.coach.bank import Question, load_questions
from llmlab.web.coach.coach import Coach
from llmlab.web.coach.rubric import Grade, Grader, KeyPoint, key_points

__all__ = ["Coach", "Grade", "Grader", "KeyPoint", "Question", "key_points", "load_questions"]
