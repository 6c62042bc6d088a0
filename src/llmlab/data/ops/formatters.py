"""Formatters: reshape records — rename/keep fields, add stable ids, split into paragraphs,
Q&A → chat messages."""

from __future__ import annotations

import hashlib
import json

from llmlab.data.ops.base import Formatter, register


@register("rename_fields")
class RenameFields(Formatter):
    """Rename fields: `mapping: {old: new}`."""

    def __init__(self, *, mapping: dict[str, str]):
        self.mapping = dict(mapping)

    def format(self, record):
        yield {self.mapping.get(k, k): v for k, v in record.items()}


@register("keep_fields")
class KeepFields(Formatter):
    """Keep only the listed fields (in that order); missing ones are skipped."""

    def __init__(self, *, fields: list[str]):
        self.fields = list(fields)

    def format(self, record):
        yield {k: record[k] for k in self.fields if k in record}


@register("add_id")
class AddId(Formatter):
    """Add a stable `id` (hash of the given fields, default the text) unless the record already has one."""

    def __init__(
        self, *, field: str = "id", from_fields: list[str] | None = None, overwrite: bool = False
    ):
        self.field, self.from_fields, self.overwrite = field, from_fields, overwrite

    def format(self, record):
        if self.field in record and not self.overwrite:
            yield record
            return
        keys = self.from_fields or [self.text_key]
        payload = json.dumps([record.get(k) for k in keys], ensure_ascii=False, sort_keys=True)
        yield {**record, self.field: hashlib.sha1(payload.encode()).hexdigest()[:16]}


@register("split_paragraphs")
class SplitParagraphs(Formatter):
    """One record per paragraph (blank-line separated) of at least `min_chars` characters."""

    def __init__(self, *, min_chars: int = 1):
        self.min_chars = min_chars

    def format(self, record):
        text = str(record.get(self.text_key) or "")
        for i, para in enumerate(p.strip() for p in text.split("\n\n")):
            if len(para) >= self.min_chars:
                yield {**record, self.text_key: para, "paragraph": i}


@register("qa_to_chat")
class QaToChat(Formatter):
    """Turn question/answer fields into chat `messages` (optional system prompt) for SFT."""

    def __init__(
        self, *, question: str = "question", answer: str = "answer", system: str | None = None
    ):
        self.question, self.answer, self.system = question, answer, system

    def format(self, record):
        if not record.get(self.question) or not record.get(self.answer):
            return
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages += [
            {"role": "user", "content": record[self.question]},
            {"role": "assistant", "content": record[self.answer]},
        ]
        yield {**record, "messages": messages}
