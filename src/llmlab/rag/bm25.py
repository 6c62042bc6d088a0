"""BM25 over jieba tokens, scored by `bm25s` (Lucene's BM25: k1=1.5, b=0.75).

Lucene's variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), term score idf · tf / (tf + k1 ·
(1 - b + b · len/avglen)) — without the classic (k1 + 1) factor, which scales every score alike.

    from llmlab.rag.bm25 import BM25Index, tokenize
    index = BM25Index.build(["归一化的作用 …", "dropout 的作用 …"])
    index.scores(tokenize("为什么要做归一化"))      # one score per document

Chinese has no spaces, so text is cut into words by jieba's search mode (which also emits the
shorter words inside long ones: 梯度消失 → 梯度, 消失, 梯度消失); Latin words are lower-cased.
Punctuation and whitespace are not tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w", re.UNICODE)
_STOP = frozenset(
    "的 了 是 和 与 及 或 在 中 对 把 被 有 就 也 都 而 之 其 这 那 一个 我们 你 吗 呢 吧 啊".split()
)


def tokenize(text: str) -> list[str]:
    """jieba search-mode tokens of `text`, lower-cased, without punctuation or stop words."""
    import jieba

    jieba.setLogLevel(60)  # its "building prefix dict" chatter goes to stderr otherwise
    return [
        t.lower()
        for t in jieba.lcut_for_search(text)
        if _WORD.search(t) and t.strip() and t.lower() not in _STOP
    ]


class BM25Index:
    """A bm25s index over pre-tokenized documents; `scores` gives every document's score."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def build(cls, texts: list[str], k1: float = 1.5, b: float = 0.75) -> BM25Index:
        import bm25s

        model = bm25s.BM25(method="lucene", k1=k1, b=b)
        model.index([tokenize(t) or [""] for t in texts], show_progress=False)
        return cls(model)

    @property
    def num_docs(self) -> int:
        return int(self.model.scores["num_docs"])

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        known = [t for t in query_tokens if t in self.model.vocab_dict]
        if not known:  # bm25s rejects an empty query; nothing matches
            return np.zeros(self.num_docs, dtype=np.float32)
        return np.asarray(self.model.get_scores(known), dtype=np.float32)

    def save(self, folder: str | Path):
        self.model.save(str(folder), show_progress=False)
        Path(folder, "tokenizer.json").write_text(json.dumps({"tokenizer": "jieba-search"}))

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        import bm25s

        return cls(bm25s.BM25.load(str(folder), show_progress=False))
