"""Heading-aware chunking of a Markdown document into passages that know their heading path.

    from llmlab.rag.chunking import chunk_markdown
    chunks = chunk_markdown(open("notes.md").read(), source="notes.md", max_chars=500)

A chunk never crosses a *unit*: a `##` heading, or a `###` sitting directly under a `#` section
(the notes' tutorial sections have no `##`). Inside a unit, consecutive heading blocks are merged
while they fit in `max_chars`; a block longer than that is cut at blank lines outside code fences.
Each chunk's `heading` is the heading path its blocks share (`基础知识点 > 归一化的作用`), and its
`lines` are the 1-based first and last line it covers. `#` lines inside code fences are comments.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from llmlab.errors import LlmlabError
from llmlab.markdown import HEADING as _HEADING
from llmlab.markdown import clean_heading

SEPARATOR = " > "
_LAYOUT = ("", "---", "***", ">")  # rules and empty quote lines separate paragraphs


@dataclass
class Chunk:
    id: str
    heading: str  # heading path, outermost first, joined by " > "
    text: str
    lines: tuple[int, int]
    source: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "lines": list(self.lines)}

    @classmethod
    def from_dict(cls, data: dict) -> Chunk:
        return cls(**{**data, "lines": tuple(data["lines"])})

    def index_text(self) -> str:
        """What retrieval sees: the heading path is part of the passage's meaning."""
        return f"{self.heading}\n{self.text}"


@dataclass
class _Block:
    path: list[str]
    unit: tuple[str, ...]
    heading_line: int  # 0 for the text before the first heading
    title_line: str  # the heading as written, kept when blocks merge
    lines: list[tuple[int, str]]  # (line number, line) under the heading


def _blocks(markdown: str) -> list[_Block]:
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    blocks = [_Block([], (), 0, "", [])]
    fenced = False
    for number, line in enumerate(markdown.split("\n"), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, clean_heading(match.group(2))))
            title = f"{match.group(1)} {clean_heading(match.group(2))}"
            blocks.append(_Block([t for _, t in stack], _unit(stack), number, title, []))
        else:
            blocks[-1].lines.append((number, line))
    return blocks


def _unit(stack: list[tuple[int, str]]) -> tuple[str, ...]:
    # The unit is the path down to the first heading below the section: a `##`, or a `###` of a
    # section that has no `##` above it.
    unit = []
    for level, title in stack:
        unit.append(title)
        if level >= 2:
            break
    return tuple(unit)


def _paragraphs(lines: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Cut at blank lines outside code fences (a fenced block stays whole)."""
    out, current, fenced = [], [], False
    for number, line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if line.strip() in _LAYOUT and not fenced:
            if current:
                out.append(current)
            current = []
        else:
            current.append((number, line))
    if current:
        out.append(current)
    return out


def _size(lines: list[tuple[int, str]]) -> int:
    return sum(len(line.strip()) for _, line in lines)


@dataclass
class _Piece:
    unit: tuple[str, ...]
    path: list[str]
    lines: list[tuple[int, str]]  # (0, text) lines are headings or separators added here
    first: int  # first line covered (the heading's line for a block's first piece)
    title: str = ""  # the heading line, shown in the text when this piece joins another block's


def _pieces(markdown: str, max_chars: int) -> list[_Piece]:
    """Each block's paragraphs merged up to max_chars (a longer paragraph stays whole)."""
    pieces = []
    for block in _blocks(markdown):
        paragraphs = _paragraphs(block.lines)
        group: list[tuple[int, str]] = []
        first = block.heading_line
        for paragraph in paragraphs:
            if group and _size(group) + _size(paragraph) > max_chars:
                pieces.append(
                    _Piece(block.unit, block.path, group, first or group[0][0], block.title_line)
                )
                group, first = [], 0
            group = group + [(0, "")] + paragraph if group else paragraph
        if group:
            pieces.append(
                _Piece(block.unit, block.path, group, first or group[0][0], block.title_line)
            )
        elif block.heading_line:  # a heading with nothing under it: kept for its children
            pieces.append(_Piece(block.unit, block.path, [], block.heading_line, block.title_line))
    return pieces


def chunk_markdown(markdown: str, source: str = "", max_chars: int = 500) -> list[Chunk]:
    """Split a Markdown document into heading-aware chunks (see the module docstring)."""
    if max_chars < 50:
        raise LlmlabError(f"max_chars must be at least 50, got {max_chars}")
    chunks: list[Chunk] = []
    pending: _Piece | None = None
    for piece in _pieces(markdown, max_chars):
        fits = pending is not None and _size(pending.lines) + _size(piece.lines) <= max_chars
        if pending is not None and pending.unit == piece.unit and fits:
            # Same unit and room left: merge, keeping the sub-heading visible in the text.
            shown = (
                [(0, ""), (0, piece.title)] if piece.title and piece.path != pending.path else []
            )
            pending.lines = pending.lines + shown + [(0, "")] + piece.lines
            pending.path = _common_prefix(pending.path, piece.path)
            continue
        if pending is not None:
            _emit(chunks, pending, source)
        pending = piece
    if pending is not None:
        _emit(chunks, pending, source)
    return chunks


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    out = []
    for x, y in zip(a, b):
        if x != y:
            break
        out.append(x)
    return out


def _emit(chunks: list[Chunk], piece: _Piece, source: str):
    numbers = [n for n, _ in piece.lines if n]
    text = "\n".join(line.rstrip() for _, line in piece.lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    if not numbers or not text:
        return  # only headings: their titles are in the heading paths of what follows
    first, last = min(piece.first, *numbers), max(numbers)
    name = source.rsplit("/", 1)[-1] or "doc"
    chunks.append(
        Chunk(f"{name}:{first}-{last}", SEPARATOR.join(piece.path), text, (first, last), source)
    )
