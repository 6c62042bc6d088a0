"""How well the grader orders answers a person labelled: `bundled:calibration.jsonl` holds ~40
hand-written answers to notes questions, each labelled good / partial / wrong. The grader's
coverage should rank them like the labels (Spearman ≥ 0.7).

    python -m llmlab.web.coach.calibration            # prints the table (docs/ui.md)
"""

from __future__ import annotations

import json

import numpy as np

from llmlab.bundled import resolve_bundled

LABELS = {"wrong": 0, "partial": 1, "good": 2}


def read_calibration(name: str = "bundled:calibration.jsonl") -> list[dict]:
    path = resolve_bundled(name, "coach", "calibration set")
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _ranks(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # ties share their average rank
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (average-tie) ranks."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))


def calibrate(coach, rows: list[dict] | None = None) -> dict:
    """Grade every labelled answer (without recording reviews) and compare with the labels."""
    rows = rows or read_calibration()
    by_question = {q.question: q for q in coach.questions}
    graded = []
    for row in rows:
        question = by_question.get(row["question"])
        if question is None:
            raise ValueError(f"calibration question not in the notes: {row['question']!r}")
        grade = coach.grader.grade(coach.rubric(question), row["answer"])
        graded.append({**row, "score": grade.score, "coverage": grade.coverage})
    labels = [LABELS[r["label"]] for r in graded]
    by_label = {
        name: float(np.mean([r["coverage"] for r in graded if r["label"] == name]))
        for name in LABELS
    }
    return {
        "answers": len(graded),
        "spearman_coverage": spearman([r["coverage"] for r in graded], labels),
        "spearman_score": spearman([r["score"] for r in graded], labels),
        "mean_coverage_by_label": by_label,
        "rows": graded,
    }


if __name__ == "__main__":
    import tempfile

    from llmlab.web.coach.coach import Coach

    with tempfile.TemporaryDirectory() as folder:
        for name, embed in (("terms only", None), ("terms + embeddings", "default")):
            result = calibrate(Coach(db=f"{folder}/{name}.sqlite", embed=embed))
            means = ", ".join(f"{k} {v:.2f}" for k, v in result["mean_coverage_by_label"].items())
            print(f"| {name} | {result['answers']} | {result['spearman_coverage']:.3f} | "
                  f"{result['spearman_score']:.3f} | {means} |")  # fmt: skip
