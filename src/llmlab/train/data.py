"""Corpora → a memory-mapped token file → packed training sequences.

    token_file = tokenize_corpus(["corpus.jsonl", "bundled:stories-en.txt"], "tok/", "runs/x/data")
    tokens = TokenFile(token_file)                     # np.memmap, never read into RAM whole
    train, val = split_sequences(tokens, seq_len=128, val_fraction=0.05)
    batches = PackedBatches(tokens, train, seq_len=128, batch_size=8, seed=0)
    batches.next_batch()["input_ids"]                   # LongTensor [8, 129] (inputs + shifted targets)

Documents (txt: separated by blank lines; jsonl: one object per line with a `text` field; parquet: a
`text` column) are tokenized once, streamed in chunks, joined with the end-of-text token and
written as uint16 (vocab ≤ 65,535) or uint32; the file is cached by a fingerprint of the inputs.
Sequence i covers tokens [i·L, i·L + L]; a fixed pseudo-random `val_fraction` of the sequences is
the validation split. The order of training sequences is a
permutation seeded by (seed, epoch), so the data position is just (epoch, cursor).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from llmlab.bundled import resolve_bundled
from llmlab.errors import LlmlabError

EOS_TOKEN = "<|endoftext|>"
CHUNK_DOCUMENTS = 256


class DataError(LlmlabError):
    pass


def resolve_corpus_path(name: str) -> Path:
    """A path, or `bundled:NAME` for a corpus file shipped in llmlab/assets/corpus/"""
    return resolve_bundled(name, "corpus", "corpus file", DataError)


def iter_documents(paths: list[str], text_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of txt / jsonl / parquet files."""
    for name in paths:
        path = resolve_corpus_path(name)
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line).get(text_field)
                    except (json.JSONDecodeError, AttributeError):
                        raise DataError(f"{path}:{number}: not a JSON object") from None
                    if text is None:
                        raise DataError(
                            f"{path}:{number}: no '{text_field}' field (set data.text_field)"
                        )
                    if str(text).strip():
                        yield str(text)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path)
            if text_field not in table.schema_arrow.names:
                raise DataError(
                    f"{path}: no '{text_field}' column (has {', '.join(table.schema_arrow.names)})"
                )
            for batch in table.iter_batches(columns=[text_field]):
                yield from (t for t in batch.column(0).to_pylist() if t and t.strip())
        else:
            text = path.read_text(encoding="utf-8")
            yield from (doc.strip() for doc in text.split("\n\n") if doc.strip())


def load_tokenizer(folder: str | Path, bert: bool = False):
    """The `tokenizers.Tokenizer` of a tokenizer folder (tokenizer.json) or file; `bert` makes the
    not-found hint the command that trains an encoder's tokenizer (with [CLS] [SEP] [MASK])."""
    from tokenizers import Tokenizer

    if not folder:
        raise DataError(
            "no tokenizer given (set data.tokenizer to a folder made by `llmlab train tokenizer`)"
        )
    path = Path(folder)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        command = "llmlab train tokenizer" + (" --bert" if bert else "")
        raise DataError(
            f"tokenizer not found: {path} (train one with "
            f"`{command} --corpus FILE... --out {folder}`)"
        )
    return Tokenizer.from_file(str(path))


def _fingerprint(paths: list[str], tokenizer_path: Path, text_field: str) -> str:
    digest = hashlib.sha256(tokenizer_path.read_bytes())
    for name in paths:
        stat = resolve_corpus_path(name).stat()
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}|{text_field}".encode())
    return digest.hexdigest()[:16]


def tokenize_corpus(
    paths: list[str],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    show_progress: bool = False,
) -> Path:
    """Tokenize the corpus once into `<out_dir>/tokens-<fingerprint>.bin` (+ .json metadata)."""
    if not paths:
        raise DataError("no corpus files given (set data.corpus)")
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer_path = (
        Path(tokenizer_dir) / "tokenizer.json"
        if Path(tokenizer_dir).is_dir()
        else Path(tokenizer_dir)
    )
    eos = tokenizer.token_to_id(EOS_TOKEN)
    if eos is None:
        raise DataError(f"tokenizer {tokenizer_dir} has no {EOS_TOKEN} token")
    vocab = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab <= 65535 else np.uint32
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"tokens-{_fingerprint(paths, tokenizer_path, text_field)}.bin"
    meta_path = target.with_suffix(".json")
    if target.exists() and meta_path.exists():
        return target
    tmp = target.with_suffix(".bin.tmp")
    count, documents = 0, 0
    with open(tmp, "wb") as handle:
        chunk: list[str] = []

        def flush():
            nonlocal count
            for encoding in tokenizer.encode_batch(chunk, add_special_tokens=False):
                ids = np.asarray(encoding.ids + [eos], dtype=dtype)
                handle.write(ids.tobytes())
                count += len(ids)
            chunk.clear()

        for text in iter_documents(paths, text_field):
            chunk.append(text)
            documents += 1
            if len(chunk) >= CHUNK_DOCUMENTS:
                flush()
        if chunk:
            flush()
    if documents == 0:
        tmp.unlink(missing_ok=True)
        raise DataError(f"the corpus is empty: no text in {', '.join(paths)}")
    tmp.replace(target)
    meta_path.write_text(
        json.dumps(
            {
                "dtype": np.dtype(dtype).name,
                "tokens": count,
                "documents": documents,
                "vocab_size": vocab,
                "eos_id": eos,
                "sources": list(paths),
            },
            indent=2,
        )
    )
    return target


class TokenFile:
    """A tokenized corpus as a read-only np.memmap plus its metadata."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.meta = json.loads(path.with_suffix(".json").read_text())
        self.tokens = np.memmap(path, dtype=self.meta["dtype"], mode="r")

    def __len__(self):
        return len(self.tokens)

    def unigram_entropy(self) -> float:
        """Entropy (nats/token) of the token frequency distribution: the loss of a model that
        ignores context. A language model is learning context only once it is below this."""
        counts = np.bincount(np.asarray(self.tokens), minlength=self.meta["vocab_size"]).astype(
            np.float64
        )
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())


def split_sequences(
    tokens: TokenFile, seq_len: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation sequences."""
    count = (len(tokens) - 1) // seq_len
    val = max(1, int(round(count * val_fraction))) if val_fraction > 0 else 0
    if count - val < 1:
        raise DataError(
            f"corpus too small: {len(tokens)} tokens make {count} sequences of {seq_len}; "
            f"need at least {val + 1} (lower data.seq_len or add text)"
        )
    # A fixed pseudo-random choice, so validation covers every source of a mixed corpus (the tail
    # alone would be only the last file). Only the sequence boundaries touch across splits.
    is_val = np.zeros(count, dtype=bool)
    is_val[np.random.default_rng(12345).permutation(count)[:val]] = True
    indices = np.arange(count)
    return indices[~is_val], indices[is_val]


class ShuffledSource:
    """The walk every batch source shares: `count` items in an order reshuffled each epoch (seeded by
    seed and epoch), `batch_size` per global batch of which rank r takes rows
    [r·b/world, (r+1)·b/world), resumable from (epoch, cursor). Subclasses turn the chosen item
    numbers into a batch."""

    def __init__(
        self, count: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise DataError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation()

    def _rng_seed(self):
        return [self.seed, self.epoch]

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng(self._rng_seed()).permutation(self.count)

    def next_items(self) -> list[int]:
        """This rank's share of the next global batch, as item numbers in [0, count)."""
        chosen: list[int] = []
        while len(chosen) < self.batch_size:
            if self.cursor >= self.count:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(self.batch_size - len(chosen), self.count - self.cursor)
            chosen.extend(int(i) for i in self._order[self.cursor : self.cursor + take])
            self.cursor += take
        share = self.batch_size // self.world_size
        return chosen[self.rank * share : (self.rank + 1) * share]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict):
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation()


class PackedBatches(ShuffledSource):
    """Endless shuffled batches of packed sequences; this process's share of each global batch.

    `batch_size` is the global micro-batch; rank r takes rows [r·b/world, (r+1)·b/world), so a
    2-process run sees exactly the rows a 1-process run sees, split in two."""

    def __init__(
        self,
        tokens: TokenFile,
        indices: np.ndarray,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tokens, self.indices, self.seq_len = tokens, indices, seq_len
        super().__init__(len(indices), batch_size, seed, rank, world_size)

    def _rows(self, sequence_ids) -> torch.Tensor:
        L = self.seq_len
        rows = [
            np.asarray(self.tokens.tokens[i * L : i * L + L + 1], dtype=np.int64)
            for i in sequence_ids
        ]
        return torch.from_numpy(np.stack(rows))

    def next_batch(self) -> dict:
        return {"input_ids": self._rows(self.indices[self.next_items()])}


class SequentialBatches:
    """The validation split in order, in batches (re-iterable, same on every process)."""

    def __init__(self, tokens: TokenFile, indices: np.ndarray, seq_len: int, batch_size: int):
        self.helper = PackedBatches(tokens, indices, seq_len, batch_size)
        self.indices, self.batch_size = indices, batch_size

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield {"input_ids": self.helper._rows(self.indices[start : start + self.batch_size])}


class TensorBatches(ShuffledSource):
    """In-memory tensors (dict of equal-length tensors) as a shuffled, resumable batch source."""

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tensors = tensors
        super().__init__(len(next(iter(tensors.values()))), batch_size, seed, rank, world_size)

    def next_batch(self) -> dict:
        index = torch.tensor(self.next_items())
        return {k: v[index] for k, v in self.tensors.items()}
