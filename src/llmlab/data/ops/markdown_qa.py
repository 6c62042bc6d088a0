"""`markdown_to_qa`: turn interview-style Markdown notes into fine-grained question/answer records.

The notes' shape: `# section`, `## question`, then `### 问题分析` (analysis), `### 面试回答`
(answer; also "简洁答法", "答题模版"…) and optionally `### 如果面试官追问「…」` (a follow-up
question with its answer). Each `##` question is a record, and each follow-up is a record of its
own too (and stays listed in its question's `follow_ups`). Other `###`/`####` headings stay inside
the part they belong to.

A tutorial-style section — its `##` headings are numbered steps ("## 1. LoRA 简介"), or it has no
`##` at all (Data-Juicer, CUDA) — gives one record per step: the section's opening text, each `##`,
and each `###` that is numbered ("### Step 1: …", "### 1. 安装和配置") or sits directly under the
section; an unnumbered `###` inside a step ("### 代码示例") belongs to that step.

Every record carries `source`, its heading path (`基础知识点 > 归一化的作用`), and `lines`, the
1-based first and last line of its text in the document given to the operator. Headings inside
fenced code blocks are code comments, not headings. Images stay as Markdown links.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from llmlab.data.ops.base import Formatter, register
from llmlab.markdown import HEADING as _HEADING
from llmlab.markdown import clean_heading

_NUMBERED = re.compile(r"^(\d+(\.\d+)*[.、)]|step\s*\d+|[一二三四五六七八九十]+、)", re.I)
_ANALYSIS = ("问题分析", "分析")
_ANSWER = ("回答", "答法", "答题", "答案", "总结回答")
_FOLLOW_UP = ("追问",)
PATH_SEPARATOR = " > "
_LAYOUT = ("", ">", "---", "***")  # lines that end a part without adding to it


@dataclass
class Block:
    """A heading (level 0 = the text before the first heading) and the lines under it."""

    level: int
    heading: str
    body: list[str]
    line: int  # 1-based line of the heading (of the first line for level 0)


def parse_blocks(markdown: str) -> list[Block]:
    """Every heading outside code fences with its body lines; blocks[0] is the preamble."""
    blocks = [Block(0, "", [], 1)]
    fenced = False
    for number, line in enumerate(markdown.split("\n"), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            blocks.append(Block(len(match.group(1)), clean_heading(match.group(2)), [], number))
        else:
            blocks[-1].body.append(line)
    return blocks


def _role(heading: str) -> str:
    if any(k in heading for k in _FOLLOW_UP):
        return "follow_up"
    if any(k in heading for k in _ANSWER):
        return "answer"
    if any(heading.startswith(k) or heading == k for k in _ANALYSIS):
        return "analysis"
    return "body"


@dataclass
class _Entry:
    path: list[str]
    question: str
    kind: str  # question | follow_up | step
    first_line: int
    last_line: int = 0
    parts: dict = field(default_factory=lambda: {"analysis": [], "answer": []})
    parent: _Entry | None = None  # the question a follow-up belongs to

    def add(self, part: str, block: Block, with_heading: bool):
        lines = [f"{'#' * max(block.level, 3)} {block.heading}", *block.body]
        self.parts[part].extend(lines if with_heading else block.body)
        filled = [i for i, line in enumerate(block.body) if line.strip() not in _LAYOUT]
        offset = 1 if block.level else 0  # a heading's body starts on the line after it
        if filled or block.level:
            self.last_line = block.line + (filled[-1] + offset if filled else 0)


def _follow_up_question(heading: str) -> str:
    # The follow-up heading quotes the question: 如果面试官追问「为什么…？」
    match = re.search(r"[「“\"](.+?)[」”\"、]*$", heading)
    return (match.group(1) if match else heading).strip('」”"？?、 ') + "？"


def _qa_section(section: str, blocks: list[Block]) -> list[_Entry]:
    entries: list[_Entry] = []
    current: _Entry | None = None
    follow_up: _Entry | None = None
    part = "analysis"
    for block in blocks:
        if block.level == 2:
            current = _Entry([section, block.heading], block.heading, "question", block.line)
            entries.append(current)
            follow_up, part = None, "analysis"
            current.add(part, block, with_heading=False)
            continue
        if current is None:
            continue
        role = _role(block.heading)
        if role == "follow_up":
            question = _follow_up_question(block.heading)
            follow_up = _Entry([*current.path, block.heading], question, "follow_up", block.line)
            follow_up.parent = current
            entries.append(follow_up)
            follow_up.add("answer", block, with_heading=False)
            continue
        if follow_up is not None:
            follow_up.add("answer", block, with_heading=True)
            continue
        if role in ("analysis", "answer"):
            part = role
            current.add(part, block, with_heading=False)
        else:
            current.add(part, block, with_heading=True)
    return entries


def _tutorial_section(section: str, opening: Block, blocks: list[Block]) -> list[_Entry]:
    first = _Entry([section], section, "step", opening.line)
    first.add("answer", opening, with_heading=False)
    entries = [first]
    current, step = first, None  # step: the current `##` entry
    for block in blocks:
        numbered = bool(_NUMBERED.match(block.heading))
        starts = block.level == 2 or (block.level == 3 and (numbered or step is None))
        if starts:
            path = [section, block.heading] if block.level == 2 or step is None else None
            path = path or [section, step.path[1], block.heading]
            current = _Entry(path, block.heading, "step", block.line)
            entries.append(current)
            if block.level == 2:
                step = current
            current.add("answer", block, with_heading=False)
        else:
            current.add("answer", block, with_heading=True)
    return entries


def qa_records(markdown: str) -> list[dict]:
    """The fine-grained Q&A records of a Markdown document (see the module docstring)."""
    blocks = parse_blocks(markdown)
    starts = [i for i, b in enumerate(blocks) if b.level == 1] + [len(blocks)]
    entries: list[_Entry] = []
    for start, end in zip(starts, starts[1:]):
        heading, children = blocks[start], blocks[start + 1 : end]
        questions = [b.heading for b in children if b.level == 2]
        if questions and not _NUMBERED.match(questions[0]):
            entries += _qa_section(heading.heading, children)
        else:
            entries += _tutorial_section(heading.heading, heading, children)
    records = [_finish(e) for e in entries]
    by_entry = {id(e): r for e, r in zip(entries, records)}
    for entry, record in zip(entries, records):
        if record and entry.parent is not None and by_entry[id(entry.parent)]:
            by_entry[id(entry.parent)]["follow_ups"].append(
                {"question": record["question"], "answer": record["answer"]}
            )
    return [r for r in records if r]


def _text(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip().removesuffix("---").strip()


def _finish(entry: _Entry) -> dict | None:
    analysis = _text(entry.parts["analysis"])
    answer = _text(entry.parts["answer"])
    # Answers are block quotes in the notes; the quote markers are layout, not content.
    answer = "\n".join(re.sub(r"^>\s?", "", line) for line in answer.split("\n")).strip()
    if not analysis and not answer:
        return None
    source = PATH_SEPARATOR.join(entry.path)
    record = {
        "id": hashlib.sha1(source.encode()).hexdigest()[:16],
        "section": entry.path[0],
        "question": entry.question,
        "analysis": analysis,
        "answer": answer,
        "follow_ups": [],
        "kind": entry.kind,
        "source": source,
        "lines": [entry.first_line, max(entry.last_line, entry.first_line)],
    }
    record["text"] = "\n\n".join(x for x in (entry.question, analysis, answer) if x)
    return record


@register("markdown_to_qa")
class MarkdownToQa(Formatter):
    """Split a Markdown Q&A document into fine-grained records (questions, follow-ups, tutorial steps) with heading path and line range."""

    def __init__(self, *, require_answer: bool = False, keep_fields: list[str] | None = None):
        self.require_answer = require_answer
        self.keep_fields = keep_fields or []

    def format(self, record):
        for qa in qa_records(str(record.get(self.text_key) or "")):
            if self.require_answer and not qa["answer"]:
                continue
            qa.update({k: record[k] for k in self.keep_fields if k in record})
            yield qa
