"""Dense retrieval: unit-length sentence embeddings compared by dot product.

    from llmlab.rag.dense import load_embedder
    embedder = load_embedder("minilm-l6-v2")        # any BERT-family name or folder llmlab.load takes
    vectors = embedder.encode(["归一化的作用", "What is dropout?"])   # float32 [2, 384]
    load_embedder("gemma3-270m")                    # a causal LM: PromptEOL states (rag/lm_embed.py)

The embedder is named in a saved index, so a reloaded index embeds queries with the same model.
"""

from __future__ import annotations

import numpy as np

DEFAULT_EMBEDDER = "minilm-l6-v2"


class Embedder:
    """A BERT-family encoder loaded through `llmlab.load`, mean-pooled (models/bert.embed)."""

    centered = False  # unit rows as they come

    def __init__(self, name: str, model, tokenizer, max_length: int = 256, batch_size: int = 32):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

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


_CACHE: dict = {}


def load_embedder(name: str = DEFAULT_EMBEDDER):
    """The embedder called `name`, loaded once per process: a BERT-family encoder (`Embedder`) or
    a causal language model (`LMEmbedder`, the ones with an LM head)."""
    if name not in _CACHE:
        import llmlab
        from llmlab.rag.lm_embed import LMEmbedder

        model, tokenizer = llmlab.load(name, device="cpu")
        kind = LMEmbedder if hasattr(model, "lm_head") else Embedder
        _CACHE[name] = kind(name, model, tokenizer)
    return _CACHE[name]


def dense_scores(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (unit) row of `vectors` with the (unit) `query`."""
    return vectors @ query.reshape(-1)
