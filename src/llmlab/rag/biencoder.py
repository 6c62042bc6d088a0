"""A small Chinese bi-encoder trained on the notes themselves (contrastive, in-batch negatives).

    from llmlab.rag.biencoder import train_biencoder
    encoder = train_biencoder(chunks)          # 800 steps: seconds on one CPU core
    encoder.encode(["为什么要做归一化"])                     # float32 [1, dim], unit rows

all-MiniLM-L6-v2 was trained on English; on the notes' Chinese questions it finds the right
section in the top 5 for about a third of them (docs/rag.md), so the dense side of the hybrid is
this instead: the features of a text — jieba search-mode words, character bigrams and
characters seen in the notes — averaged from a learned table (an EmbeddingBag), then a linear map
and unit length.
One encoder embeds both questions and passages.

Training pairs come from the notes, never from the eval set: a passage's heading → its text, a
sub-heading inside it → the text, and a sentence → the rest of its passage (the inverse cloze task
of Lee et al., 2019). A batch holds pairs of distinct passages, so every other passage in the
batch is a negative (InfoNCE, both directions). Training runs through llmlab's `Trainer`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmlab.rag.bm25 import tokenize

NAME = "notes-biencoder"
_CJK = re.compile(r"[\u4e00-\u9fff]+")
_SENTENCE = re.compile(r"(?<=[。！？；\n])")


def features(text: str) -> list[str]:
    """Words (jieba search mode), Chinese characters and character bigrams of `text`."""
    words = tokenize(text)
    chars, bigrams = [], []
    for run in _CJK.findall(text):
        chars += list(run)
        bigrams += [run[i : i + 2] for i in range(len(run) - 1)]
    return [f"w:{w}" for w in words] + [f"c:{c}" for c in chars] + [f"b:{b}" for b in bigrams]


class BiEncoder(nn.Module):
    """Mean of learned feature vectors → linear → unit length. Row 0 stands for unseen features."""

    name = NAME  # what a saved index records as its embedder

    def __init__(self, vocab: list[str], dim: int = 64):
        super().__init__()
        self.vocab, self.dim = list(vocab), dim
        self.rows = {f: i + 1 for i, f in enumerate(self.vocab)}
        self.table = nn.EmbeddingBag(len(self.vocab) + 1, dim, mode="mean")
        self.proj = nn.Linear(dim, dim)
        # exp(scale) is the inverse temperature of the contrastive loss (learned, starts at 20)
        self.scale = nn.Parameter(torch.tensor(3.0))
        nn.init.normal_(self.table.weight, std=0.1)

    @classmethod
    def for_texts(cls, texts: list[str], dim: int = 64) -> BiEncoder:
        """An untrained encoder whose vocabulary is every feature of `texts`."""
        return cls(sorted({f for t in texts for f in features(t)}), dim)

    def hashed(self, text: str) -> list[int]:
        """The table rows of `text`'s known features (unknown ones add nothing)."""
        return [self.rows[f] for f in features(text) if f in self.rows]

    def ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """EmbeddingBag inputs (flat feature ids, offsets) for `texts`."""
        return _bag([self.hashed(t) for t in texts])

    def forward(self, flat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.table(flat, offsets)), dim=-1)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.eval()
        with torch.inference_mode():
            return self(*self.ids(list(texts))).float().numpy()

    def save(self, folder: str | Path):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))
        torch.save({"dim": self.dim, "state": self.state_dict()}, folder / "biencoder.pt")

    @classmethod
    def load(cls, folder: str | Path) -> BiEncoder:
        folder = Path(folder)
        saved = torch.load(folder / "biencoder.pt", weights_only=True)
        model = cls(json.loads((folder / "vocab.json").read_text()), saved["dim"])
        model.load_state_dict(saved["state"])
        return model.eval()


def _segments(chunk) -> list[str]:
    """A passage as its heading path plus its sentences (lines and 。！？； ends cut sentences)."""
    return [chunk.heading] + [t.strip() for t in _SENTENCE.split(chunk.text) if t.strip()]


def training_pairs(chunks) -> list[tuple[str, int, int]]:
    """(query, passage index, segment the passage drops or -1) taken from the passages."""
    pairs = []
    for i, chunk in enumerate(chunks):
        path = chunk.heading.split(" > ")
        pairs.append((path[-1], i, -1))
        if len(path) > 1:
            pairs.append((" ".join(path[-2:]), i, -1))
        for j, segment in enumerate(_segments(chunk)[1:], start=1):
            if segment.startswith("#"):
                pairs.append((segment.lstrip("# "), i, -1))  # a sub-heading inside the passage
            elif len(segment) >= 8:
                pairs.append((segment, i, j))  # inverse cloze: the passage without it
    return pairs


class PairBatches:
    """Random batches of (query, passage) pairs with distinct passages (a Trainer batch source).

    Feature ids are hashed once per segment, so a batch only concatenates lists."""

    def __init__(self, encoder: BiEncoder, chunks, batch_size: int, seed: int = 0):
        self.pairs = training_pairs(chunks)
        hashed = encoder.hashed
        self.segments = [[hashed(s) for s in _segments(c)] for c in chunks]
        self.queries = [hashed(q) for q, _, _ in self.pairs]
        self.batch_size = min(batch_size, len(chunks))
        self.rng = random.Random(seed)

    def next_batch(self) -> dict:
        picked, seen = [], set()
        while len(picked) < self.batch_size:
            k = self.rng.randrange(len(self.pairs))
            _, passage, drop = self.pairs[k]
            if passage in seen:
                continue
            seen.add(passage)
            # Inverse cloze: most of the time the passage loses the sentence that is the query.
            keep_all = drop < 0 or self.rng.random() < 0.1
            segments = self.segments[passage]
            ids = [x for j, seg in enumerate(segments) if keep_all or j != drop for x in seg]
            picked.append((self.queries[k], ids))
        q_flat, q_off = _bag([q for q, _ in picked])
        p_flat, p_off = _bag([p for _, p in picked])
        return {"q_flat": q_flat, "q_off": q_off, "p_flat": p_flat, "p_off": p_off}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict):
        self.rng.setstate(state["rng"])


def _bag(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    flat, offsets = [], []
    for row in rows:
        offsets.append(len(flat))
        flat += row or [0]
    return torch.tensor(flat, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def contrastive_loss(model: BiEncoder, batch: dict):
    """InfoNCE over in-batch negatives, queries→passages and passages→queries."""
    q = model(batch["q_flat"], batch["q_off"])
    p = model(batch["p_flat"], batch["p_off"])
    logits = model.scale.exp() * q @ p.T
    target = torch.arange(len(q))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    accuracy = (logits.argmax(-1) == target).float().mean()
    return loss, {"accuracy": float(accuracy), "tokens": int(batch["q_flat"].numel())}


# Chosen on the dev split of the eval set (docs/rag.md); part of the default index's cache key.
SETTINGS = {"steps": 800, "batch_size": 32, "lr": 1e-2, "dim": 64, "seed": 0}


def train_biencoder(
    chunks,
    steps: int = SETTINGS["steps"],
    batch_size: int = SETTINGS["batch_size"],
    lr: float = SETTINGS["lr"],
    dim: int = SETTINGS["dim"],
    seed: int = SETTINGS["seed"],
) -> BiEncoder:
    """Train a BiEncoder on pairs drawn from `chunks` (see the module docstring); deterministic."""
    from llmlab.train.config import (
        CheckpointConfig,
        DiagnosticsConfig,
        LoopConfig,
        OptimConfig,
        TrainerConfig,
    )
    from llmlab.train.trainer import Trainer

    torch.manual_seed(seed)
    encoder = BiEncoder.for_texts([c.index_text() for c in chunks], dim=dim)
    config = TrainerConfig(
        run_dir="",
        optim=OptimConfig(lr=lr, warmup_steps=steps // 10, schedule="cosine"),
        train=LoopConfig(
            steps=steps, batch_size=batch_size, device="cpu", progress=False, seed=seed
        ),
        # the loss of small random batches jumps by design; spike warnings would be noise
        diagnostics=DiagnosticsConfig(every=0, saturation=False, loss_spike_factor=1e9),
        checkpoint=CheckpointConfig(resume=False),
    )
    trainer = Trainer(
        encoder, contrastive_loss, PairBatches(encoder, chunks, batch_size, seed), config
    )
    trainer.fit()
    trainer.close()
    return encoder.eval()
