"""Markdown headings as the notes write them, shared by the Q&A operator (data/ops/markdown_qa.py)
and the RAG chunker (rag/chunking.py): the heading pattern, and heading text without its marks."""

from __future__ import annotations

import re

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


def clean_heading(text: str) -> str:
    """Heading text without Markdown emphasis/code marks, trailing colons or stray spaces."""
    # paired emphasis only: keep **kwargs
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text.replace("`", ""))
    return text.strip().rstrip("：:").strip()
