"""Dense retrieval: unit-length sentence embeddings compared by dot product.

    from llmlab.rag.dense import load_embedder
    embedder = load_embedder("minilm-l6-v2")        # any BERT-family name or folder llmlab.load takes
    vectors = embedder.encode(["归一化的作用", "What is dropout?"])   # float32 [2, 384]

The embedder is named in a saved index, so a reloaded index embeds queries with the same model.
"""

from __future__ import annotations

import numpy as np

DEFAULT_EMBEDDER = "minilm-l6-v2"


class Embedder:
    """A BERT-family encoder loaded through `llmlab.load`, mean-pooled (models/bert.embed)."""

    def __init__(self, name: str, max_length: int = 256, batch_size: int = 32):
        import llmlab

        self.name = name
        self.max_length = max_length
        self.batch_size = batch_size
        self.model, self.tokenizer = llmlab.load(name, device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        from llmlab.models.bert import embed

        with torch.inference_mode():
            vectors = embed(
                list(texts),
                self.tokenizer,
                self.model,
                batch_size=self.batch_size,
                max_length=self.max_length,
            )
        return vectors.float().cpu().numpy()


_CACHE: dict[str, Embedder] = {}


def load_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder called `name`, loaded once per process."""
    if name not in _CACHE:
        _CACHE[name] = Embedder(name)
    return _CACHE[name]


def dense_scores(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (unit) row of `vectors` with the (unit) `query`."""
    return vectors @ query.reshape(-1)
