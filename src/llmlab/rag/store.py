"""The default index: the bundled notes (`bundled:notes-zh.md`), built on first use and cached.

    from llmlab.rag.store import default_index
    index = default_index()        # ~/.cache/llmlab/rag/<hash>/ (LLMLAB_CACHE moves it)

The cache folder's name is a hash of the notes' text and the index settings, so a changed
document or chunker setting builds a new index instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from llmlab.bundled import resolve_bundled
from llmlab.rag.biencoder import NAME as BIENCODER
from llmlab.rag.biencoder import SETTINGS
from llmlab.rag.index import DEFAULT_EMBEDDER, FORMAT_VERSION, Index
from llmlab.rag.lm_embed import SETTINGS as LM_SETTINGS

DEFAULT_NOTES = "bundled:notes-zh.md"
DEFAULT_MAX_CHARS = 500


def read_document(source: str = DEFAULT_NOTES) -> tuple[str, str]:
    """(text, display name) of a Markdown file or `bundled:NAME` (a file in llmlab/assets/corpus)."""
    path = resolve_bundled(source, "corpus", what="document")
    return path.read_text(encoding="utf-8"), path.name


def cache_root() -> Path:
    root = os.environ.get("LLMLAB_CACHE") or os.path.join(Path.home(), ".cache", "llmlab")
    return Path(root) / "rag"


def default_index_dir(
    source: str = DEFAULT_NOTES,
    embedder: str | None = DEFAULT_EMBEDDER,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Path:
    text, name = read_document(source)
    # The key covers everything the index depends on, so a change never reuses a stale index.
    settings = SETTINGS if embedder == BIENCODER else LM_SETTINGS if embedder else {}
    training = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    key = f"{FORMAT_VERSION}|{embedder}|{training}|{max_chars}|{text}"
    return cache_root() / f"{Path(name).stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def build_index(
    source: str = DEFAULT_NOTES,
    embedder: str | None = DEFAULT_EMBEDDER,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Index:
    text, name = read_document(source)
    return Index.from_markdown(text, source=name, max_chars=max_chars, embedder=embedder)


def default_index(
    source: str = DEFAULT_NOTES,
    embedder: str | None = DEFAULT_EMBEDDER,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Index:
    """The cached index of `source`, built and saved first when missing."""
    folder = default_index_dir(source, embedder, max_chars)
    if (folder / "index.json").is_file():
        return Index.load(folder)
    index = build_index(source, embedder, max_chars)
    folder.parent.mkdir(parents=True, exist_ok=True)
    index.save(folder)
    return index
