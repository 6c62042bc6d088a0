"""The interview coach: rubric from a reference answer, grading, FSRS scheduling, SQLite history,
progress, `llmlab coach` in a terminal, and the grader's calibration on hand-labelled answers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llmlab.web.coach import Coach, Grader, key_points, load_questions
from llmlab.web.coach.calibration import LABELS, calibrate, read_calibration, spearman

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


@pytest.fixture
def coach(tmp_path):
    return Coach(db=tmp_path / "coach.sqlite", embed=None, clock=Clock())


def test_questions_come_from_the_notes_with_answers_and_places():
    questions = load_questions()
    assert len(questions) > 40
    norm = next(q for q in questions if q.question == "归一化的作用")
    assert norm.section == "基础知识点" and norm.source == "基础知识点 > 归一化的作用"
    assert "方差" in norm.answer and norm.lines[0] < norm.lines[1]
    notes = (ROOT / "src/llmlab/assets/corpus/notes-zh.md").read_text(encoding="utf-8").splitlines()
    assert notes[norm.lines[0] - 1].lstrip("# ").startswith("归一化的作用")  # lines are 1-based


def test_key_points_are_sentences_with_terms_and_short_answers_are_cut_at_commas():
    points = key_points(
        "**Dropout** 在训练时随机丢弃神经元。它相当于集成多个子网络。\n1. 降低过拟合"
    )
    assert [p.text for p in points] == [
        "Dropout 在训练时随机丢弃神经元",
        "它相当于集成多个子网络",
        "降低过拟合",
    ]
    assert (
        "dropout" in points[0].terms and "神经元" in points[0].terms and "在" not in points[0].terms
    )
    short = key_points(
        "BatchNorm 对 batch 维度归一化，依赖多个样本，适合 CNN；LayerNorm 对单个样本归一化"
    )
    assert len(short) >= 3


def test_grading_credits_covered_points_and_not_missing_ones():
    points = key_points("梯度消失来自导数连乘。激活函数饱和会加剧它。残差连接可以缓解梯度消失。")
    grader = Grader()
    full = grader.grade(points, "导数连乘导致梯度消失；激活函数饱和会加剧；残差连接缓解梯度消失。")
    half = grader.grade(points, "主要是导数连乘造成梯度消失。")
    none = grader.grade(points, "我不知道。")
    assert full.score == 5 and not full.missed
    assert none.score == 0 and not none.hit and len(none.missed) == 3
    assert 0 < half.score < 5 and half.hit == ["梯度消失来自导数连乘"]
    with pytest.raises(ValueError, match="no key points"):
        grader.grade([], "x")


def test_meaning_credit_uses_the_embedder():
    points = key_points("激活函数饱和时梯度很小。权重初始化过大也会出问题。")
    # An embedder that calls everything identical gives full credit where terms gave none.
    same = Grader(embed=lambda texts: __import__("numpy").ones((len(texts), 1)))
    assert same.grade(points, "完全不同的说法。").score == 5
    assert Grader().grade(points, "完全不同的说法。").score == 0


def test_schedule_history_and_progress(coach, tmp_path):
    first = coach.next_question()
    assert first.id == coach.questions[0].id  # nothing seen: the first new question
    good = coach.grade(first.id, first.answer)  # the reference answer itself
    assert good.grade.score == 5
    second = coach.next_question()
    assert second.id != first.id  # the answered one is not due yet: a new question
    bad = coach.grade(second.id, "不知道")
    assert (
        bad.grade.score <= 1 and bad.next_due < good.next_due
    )  # what was missed comes back sooner
    coach.clock.now += timedelta(days=1)
    assert coach.next_question().id == second.id  # overdue first
    section = coach.questions[-1].section
    assert coach.next_question(section).section == section
    with pytest.raises(Exception, match="no questions in section"):
        coach.next_question("没有这个章节")
    again = Coach(db=tmp_path / "coach.sqlite", embed=None, clock=coach.clock)  # history persists
    reviews = again.history.reviews()
    assert [(r["question_id"], r["score"]) for r in reviews] == [
        (first.id, 5),
        (second.id, bad.grade.score),
    ]
    rows = {r["section"]: r for r in again.progress()}
    base = rows[first.section]
    total = sum(q.section == first.section for q in coach.questions)
    assert base["questions"] == total and base["answered"] == 2
    assert base["mastery"] == pytest.approx((5 + bad.grade.score) / (5 * total))
    assert base["due"] == 1  # the missed one, a day later


def test_rubric_is_extracted_once_per_question(coach):
    question = coach.questions[3]
    first = coach.rubric(question)
    coach.history.save_rubric(question.id, "stale-hash", [])  # a changed reference answer...
    assert coach.rubric(question) == first  # ...is noticed by its hash and re-extracted
    stored = coach.history.rubric(
        question.id, __import__("hashlib").sha1(question.answer.encode()).hexdigest()[:16]
    )
    assert [p["text"] for p in stored] == [p.text for p in first]


def test_spearman_matches_hand_computed_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks 1, 2.5, 2.5, 4 against 1..4 → r = 0.9487
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)


def test_calibration_set_is_labelled_and_on_notes_questions():
    rows = read_calibration()
    asked = {q.question for q in load_questions()}
    assert len(rows) >= 40 and {r["label"] for r in rows} == set(LABELS)
    assert all(r["question"] in asked for r in rows)


@pytest.mark.slow
def test_grader_orders_hand_labelled_answers(tmp_path):
    result = calibrate(Coach(db=tmp_path / "c.sqlite"))  # the shipped grader: terms + embeddings
    means = result["mean_coverage_by_label"]
    assert means["wrong"] < means["partial"] < means["good"]
    assert result["spearman_coverage"] >= 0.7, result["spearman_coverage"]


def test_terminal_coach_grades_an_answer(tmp_path):
    script = "归一化把特征缩放到均值为0方差为1的分布，稳定训练，加速收敛。\n\n/quit\n"
    run = subprocess.run([sys.executable, "-m", "llmlab", "coach", "--section", "基础知识点", "--no-feedback",
                          "--grader", "terms", "--db", str(tmp_path / "c.sqlite")],
                         input=script, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "梯度消失和梯度爆炸的原因是什么" in run.stdout  # the section's first question
    assert "score " in run.stdout and "reference answer:" in run.stdout and "missed:" in run.stdout
    progress = subprocess.run([sys.executable, "-m", "llmlab", "coach", "--progress", "--grader", "terms",
                               "--db", str(tmp_path / "c.sqlite")], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)  # fmt: skip
    assert progress.returncode == 0 and "基础知识点" in progress.stdout and " 1 " in progress.stdout
