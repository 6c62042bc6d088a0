"""Retrieval-augmented answers over the notes: chunks, BM25 + dense search, fusion, citations.

    from llmlab.rag import Index, default_index
    index = default_index()                          # the bundled notes, built once and cached
    for hit in index.search("为什么要做归一化", k=5):
        print(hit.heading, hit.score)

See docs/rag.md; the CLI is `llmlab rag index|search|ask|eval`.
"""

from llmlab.rag.chunking import Chunk, chunk_markdown
from llmlab.rag.index import Hit, Index
from llmlab.rag.store import DEFAULT_NOTES, default_index, default_index_dir

__all__ = [
    "Chunk",
    "Hit",
    "Index",
    "chunk_markdown",
    "default_index",
    "default_index_dir",
    "DEFAULT_NOTES",
]
