"""`markdown_to_qa`: turn interview-style Markdown notes into question/analysis/answer records.

The notes' shape: `# section`, `## question`, then `### 问题分析` (analysis), `### 面试回答`
(answer; also "简洁答法", "答题模版"…) and optionally `### 如果面试官追问「…」` (a follow-up
question with its answer). Other `###`/`####` headings stay inside the part they belong to. A
section whose `##` headings are numbered steps ("## 1. LoRA 简介") is one entry about the section.
Headings inside fenced code blocks are code comments, not headings.
"""

from __future__ import annotations

import hashlib
import re

from llmlab.data.ops.base import Formatter, register

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_NUMBERED = re.compile(r"^(\d+[.、)]|step\s*\d+|[一二三四五六七八九十]+、)", re.I)
_ANALYSIS = ("问题分析", "分析")
_ANSWER = ("回答", "答法", "答题", "答案", "总结回答")
_FOLLOW_UP = ("追问",)


def clean_heading(text: str) -> str:
    """Heading text without Markdown emphasis, trailing colons or stray spaces."""
    text = re.sub(
        r"\*\*(.+?)\*\*", r"\1", text.replace("`", "")
    )  # paired emphasis only: keep **kwargs
    return text.strip().rstrip("：:").strip()


def _role(heading: str) -> str:
    if any(k in heading for k in _FOLLOW_UP):
        return "follow_up"
    if any(k in heading for k in _ANSWER):
        return "answer"
    if any(heading.startswith(k) or heading == k for k in _ANALYSIS):
        return "analysis"
    return "body"


def parse_blocks(markdown: str) -> list[tuple[int, str, list[str]]]:
    """(level, heading, body lines) for each heading outside code fences; level 0 = preamble."""
    blocks: list[tuple[int, str, list[str]]] = [(0, "", [])]
    fenced = False
    for line in markdown.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            blocks.append((len(match.group(1)), clean_heading(match.group(2)), []))
        else:
            blocks[-1][2].append(line)
    return blocks


def _text(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def qa_records(markdown: str) -> list[dict]:
    blocks = parse_blocks(markdown)
    entries: list[dict] = []
    section = ""
    current: dict | None = None
    part = "analysis"
    numbered_section = False
    for i, (level, heading, body) in enumerate(blocks):
        if level == 1:
            section = heading
            questions = [h for lv, h, _ in blocks[i + 1 : _next_level1(blocks, i)] if lv == 2]
            numbered_section = bool(questions and _NUMBERED.match(questions[0]))
            has_questions = bool(questions)
            if numbered_section or not has_questions:
                current = _entry(entries, section, heading)
                part = "analysis"
                current["parts"]["analysis"].extend(body)
            else:
                current = None
            continue
        if level == 2 and not numbered_section:
            current = _entry(entries, section, heading)
            part = "analysis"
            current["parts"]["analysis"].extend(body)
            continue
        if current is None:
            continue
        role = _role(heading) if level >= 3 else "body"
        if role == "follow_up":
            question = re.search(r"[「“\"](.+?)[」”\"]?$", heading)
            current["follow_ups"].append(
                {
                    "question": (question.group(1) if question else heading).strip('」”"？?')
                    + "？",
                    "answer": _text(body),
                }
            )
            part = "follow_up"
            continue
        if role in ("analysis", "answer"):
            part = role
            current["parts"][part].extend(body)
            continue
        target = current["follow_ups"][-1] if part == "follow_up" else None
        lines = [f"{'#' * max(level, 3)} {heading}", *body] if level else body
        if target is not None:
            target["answer"] = (target["answer"] + "\n" + "\n".join(lines)).strip()
        else:
            current["parts"][part].extend(lines)
    return [r for r in (_finish(e) for e in entries) if r]


def _next_level1(blocks, i):
    return next((j for j in range(i + 1, len(blocks)) if blocks[j][0] == 1), len(blocks))


def _entry(entries, section, question):
    entry = {
        "section": section,
        "question": question,
        "parts": {"analysis": [], "answer": []},
        "follow_ups": [],
    }
    entries.append(entry)
    return entry


def _finish(entry: dict) -> dict | None:
    analysis = _text(entry["parts"]["analysis"])
    answer = _text(entry["parts"]["answer"])
    # Answers are block quotes in the notes; the quote markers are layout, not content.
    answer = "\n".join(re.sub(r"^>\s?", "", line) for line in answer.split("\n")).strip()
    if not analysis and not answer:
        return None
    question = entry["question"]
    record = {
        "id": hashlib.sha1(f"{entry['section']}|{question}".encode()).hexdigest()[:16],
        "section": entry["section"],
        "question": question,
        "analysis": analysis,
        "answer": answer,
        "follow_ups": [f for f in entry["follow_ups"] if f["answer"]],
    }
    record["text"] = "\n\n".join(x for x in (question, analysis, answer) if x)
    return record


@register("markdown_to_qa")
class MarkdownToQa(Formatter):
    """Split a Markdown Q&A document into question/analysis/answer records (question headings → records)."""

    def __init__(self, *, require_answer: bool = False, keep_fields: list[str] | None = None):
        self.require_answer = require_answer
        self.keep_fields = keep_fields or []

    def format(self, record):
        for qa in qa_records(str(record.get(self.text_key) or "")):
            if self.require_answer and not qa["answer"]:
                continue
            qa.update({k: record[k] for k in self.keep_fields if k in record})
            yield qa
