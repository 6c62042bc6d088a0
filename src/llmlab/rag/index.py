"""`Index`: chunks of a Markdown document, a BM25 index and dense vectors, searched alone or fused.

    from llmlab.rag import Index
    index = Index.from_markdown(open("notes.md").read(), source="notes.md")   # trains its encoder
    hits = index.search("为什么要做归一化", k=5)                # hybrid: BM25 + dense, fused by RRF
    index.save("runs/rag-index"); index = Index.load("runs/rag-index")

Modes: `bm25`, `dense`, `hybrid` (weighted reciprocal rank fusion of the two rankings). The dense
side is a causal LM's PromptEOL states by default (`embedder="gemma3-270m"`, rag/lm_embed.py,
centred on the passages' mean), the notes' own bi-encoder (`"notes-biencoder"`, trained on the
chunks at build time) or any BERT-family embedder by name (`"minilm-l6-v2"`). A `reranker`
(rag/rerank.py) reorders the first `candidates` hits of the mode's ranking. Saved as a folder:
`chunks.jsonl`, `bm25/` (bm25s's own files), `dense.npy`, `center.npy` (LM embedders) and
`index.json` (the embedder's name,
chunking settings and a format version), so a reloaded index embeds queries with the same model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmlab.errors import LlmlabError
from llmlab.rag.biencoder import NAME as BIENCODER
from llmlab.rag.biencoder import BiEncoder, train_biencoder
from llmlab.rag.bm25 import BM25Index, tokenize
from llmlab.rag.chunking import Chunk, chunk_markdown
from llmlab.rag.dense import dense_scores, load_embedder
from llmlab.rag.fusion import rrf

FORMAT_VERSION = 1
MODES = ("bm25", "dense", "hybrid")
# Gemma 3 270M's PromptEOL states (rag/lm_embed.py): chosen on the dev split over the notes'
# own bi-encoder (`notes-biencoder`, trained at build time) and MiniLM (docs/rag.md).
DEFAULT_EMBEDDER = "gemma3-270m"
HYBRID_WEIGHTS = (1.0, 0.25)  # BM25, dense: chosen on the dev split (docs/rag.md)


@dataclass
class Hit:
    id: str
    heading: str
    score: float
    text: str
    lines: tuple[int, int]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "heading": self.heading,
            "score": round(float(self.score), 6),
            "text": self.text,
            "lines": list(self.lines),
        }


class Index:
    """Searchable chunks: BM25 always, dense vectors when an embedder was given."""

    def __init__(
        self,
        chunks: list[Chunk],
        bm25: BM25Index,
        vectors=None,
        embedder=None,
        meta=None,
        center=None,
    ):
        self.chunks = chunks
        self.bm25 = bm25
        self.vectors = vectors  # float32 [len(chunks), dim], unit rows; None = BM25 only
        # A name llmlab.load takes (minilm-l6-v2, gemma3-270m), or a trained BiEncoder object
        self.embedder = embedder
        # Subtracted from every embedding before normalizing (LM states share a large common
        # direction; rag/lm_embed.py): the mean of the passages' raw vectors, or None.
        self.center = center
        self.meta = dict(meta or {})
        self.hybrid_weights = HYBRID_WEIGHTS

    @property
    def embedder_name(self) -> str | None:
        if self.embedder is None or isinstance(self.embedder, str):  # None: a BM25-only index
            return self.embedder
        return self.embedder.name

    def _encoder(self):
        return load_embedder(self.embedder) if isinstance(self.embedder, str) else self.embedder

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        vectors = self._encoder().encode(texts)
        return vectors if self.center is None else unit_rows(vectors - self.center)

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def build(
        cls, chunks: list[Chunk], embedder: str | None = DEFAULT_EMBEDDER, meta=None
    ) -> Index:
        """Index `chunks`; `embedder`: a causal LM's name (gemma3-270m), notes-biencoder (trained
        here), a BERT name, a trained encoder object (with `name` and `encode`), or None for BM25
        only."""
        if not chunks:
            raise LlmlabError("nothing to index: the document has no text")
        texts = [c.index_text() for c in chunks]
        if embedder == BIENCODER:
            embedder = train_biencoder(chunks)
        index = cls(chunks, BM25Index.build(texts), None, embedder, meta)
        if embedder:
            encoder = index._encoder()
            vectors = encoder.encode(texts)
            if getattr(encoder, "centered", False):
                index.center = vectors.mean(0)
            index.vectors = vectors if index.center is None else unit_rows(vectors - index.center)
        return index

    @classmethod
    def from_markdown(
        cls,
        markdown: str,
        source: str = "",
        max_chars: int = 500,
        embedder: str | None = DEFAULT_EMBEDDER,
    ) -> Index:
        chunks = chunk_markdown(markdown, source=source, max_chars=max_chars)
        return cls.build(chunks, embedder, meta={"source": source, "max_chars": max_chars})

    # ---- searching ------------------------------------------------------------------------
    def rankings(self, query: str, mode: str = "hybrid") -> tuple[list[int], np.ndarray]:
        """Every chunk's position, best first, and the score each ranking used (by chunk)."""
        if mode not in MODES:
            raise LlmlabError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode != "bm25" and self.vectors is None:
            raise LlmlabError(f"this index has no dense vectors; mode {mode!r} needs them")
        n = len(self.chunks)
        if mode in ("bm25", "hybrid"):
            lexical = self.bm25.scores(tokenize(query))
        if mode in ("dense", "hybrid"):
            semantic = dense_scores(self.vectors, self.embed_queries([query]))
        if mode == "bm25":
            return _order(lexical), lexical
        if mode == "dense":
            return _order(semantic), semantic
        fused = fuse(lexical, semantic, self.hybrid_weights)
        scores = np.zeros(n, dtype=np.float32)
        for doc, score in fused:
            scores[doc] = score
        return [doc for doc, _ in fused], scores

    def search(
        self,
        query: str,
        k: int = 5,
        mode: str = "hybrid",
        reranker=None,
        candidates: int = 20,
    ) -> list[Hit]:
        """The k best chunks for `query` (see the module docstring for modes and reranking)."""
        if not query or not query.strip():
            raise LlmlabError("the query is empty")
        if k < 1:
            raise LlmlabError(f"k must be at least 1, got {k}")
        order, scores = self.rankings(query, mode)
        if reranker is None:
            return [self._hit(i, scores[i]) for i in order[:k]]
        pool = order[: max(candidates, k)]
        reranked = reranker.score(query, [self.chunks[i].index_text() for i in pool])
        best = sorted(range(len(pool)), key=lambda j: -reranked[j])
        return [self._hit(pool[j], reranked[j]) for j in best[:k]]

    def _hit(self, i: int, score: float) -> Hit:
        c = self.chunks[i]
        return Hit(c.id, c.heading, float(score), c.text, c.lines)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path):
        """Write the index to `folder` (replaced as a whole, so a failed save leaves the old one)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        if tmp.exists():
            _remove(tmp)
        (tmp / "bm25").mkdir(parents=True)
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
            for chunk in self.chunks:
                f.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
        self.bm25.save(tmp / "bm25")
        if self.vectors is not None:
            np.save(tmp / "dense.npy", self.vectors.astype(np.float32))
        if self.center is not None:
            np.save(tmp / "center.npy", self.center.astype(np.float32))
        if self.embedder is not None and not isinstance(self.embedder, str):
            self.embedder.save(tmp / "encoder")
        info = {"format": FORMAT_VERSION, "embedder": self.embedder_name, **self.meta}
        (tmp / "index.json").write_text(json.dumps(info, ensure_ascii=False, indent=2))
        old = folder.with_name(folder.name + f".old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        if old.exists():
            _remove(old)

    @classmethod
    def load(cls, folder: str | Path) -> Index:
        folder = Path(folder)
        info_path = folder / "index.json"
        if not info_path.is_file():
            raise LlmlabError(f"no RAG index at {folder} (build one with `llmlab rag index`)")
        info = json.loads(info_path.read_text())
        if info.get("format") != FORMAT_VERSION:
            raise LlmlabError(f"index at {folder} has format {info.get('format')}, expected 1")
        with open(folder / "chunks.jsonl", encoding="utf-8") as f:
            chunks = [Chunk.from_dict(json.loads(line)) for line in f if line.strip()]
        dense = folder / "dense.npy"
        vectors = np.load(dense) if dense.is_file() else None
        center = np.load(folder / "center.npy") if (folder / "center.npy").is_file() else None
        embedder = info.pop("embedder", None)
        info.pop("format")
        if embedder == BIENCODER:
            embedder = BiEncoder.load(folder / "encoder")
        return cls(chunks, BM25Index.load(folder / "bm25"), vectors, embedder, info, center)


def _order(scores: np.ndarray) -> list[int]:
    # Stable: equal scores keep document order, so results do not depend on sort internals.
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def fuse(lexical: np.ndarray, semantic: np.ndarray, weights=HYBRID_WEIGHTS):
    """The hybrid ranking: weighted RRF of every chunk's BM25 and dense scores, as (chunk, score)
    pairs best first. Chunks with no query word get no BM25 rank, so they do not gain from the
    lexical list."""
    lexical_rank = [i for i in _order(lexical) if lexical[i] > 0]
    return rrf([lexical_rank, _order(semantic)], weights=list(weights))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def _remove(path: Path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)
