"""Tokenizer training (byte-level BPE, Chinese, chat tokens) and the mmap token file + packed batches."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import transformers
from train_fixtures import tiny_tokenizer  # noqa: F401 (fixture)

from llmlab.train.data import (
    DataError,
    PackedBatches,
    TokenFile,
    iter_documents,
    split_sequences,
    tokenize_corpus,
)


def test_tokenizer_roundtrips_chinese_and_has_chat_tokens(tiny_tokenizer):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_tokenizer["dir"])
    text = "梯度消失和梯度爆炸 — vanishing gradients, 😀"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: nothing is unknown
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_corpus_formats_token_file_and_packed_batches(tmp_path, tiny_tokenizer):
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps({"text": f"document number {i} is here."}) for i in range(50))
    )
    pq.write_table(
        pa.table({"text": [f"parquet row {i}" for i in range(30)]}), tmp_path / "b.parquet"
    )
    paths = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet"), tiny_tokenizer["corpus"]]
    assert sum(1 for _ in iter_documents(paths[:2])) == 80
    path = tokenize_corpus(paths, tiny_tokenizer["dir"], tmp_path / "data")
    assert tokenize_corpus(paths, tiny_tokenizer["dir"], tmp_path / "data") == path  # cached
    tokens = TokenFile(path)
    assert tokens.tokens.dtype == np.uint16 and isinstance(tokens.tokens, np.memmap)
    assert tokens.meta["documents"] == 80 + 151
    assert (
        int((np.asarray(tokens.tokens) == tokens.meta["eos_id"]).sum()) == tokens.meta["documents"]
    )
    train, val = split_sequences(tokens, 16, 0.1)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == (len(tokens) - 1) // 16
    batches = PackedBatches(tokens, train, 16, batch_size=4, seed=3)
    first = batches.next_batch()["input_ids"]
    assert first.shape == (4, 17)
    again = PackedBatches(tokens, train, 16, batch_size=4, seed=3).next_batch()["input_ids"]
    assert (first == again).all()  # deterministic shuffle
    halves = [
        PackedBatches(tokens, train, 16, batch_size=4, seed=3, rank=r, world_size=2).next_batch()[
            "input_ids"
        ]
        for r in range(2)
    ]
    assert (np.concatenate(halves) == first.numpy()).all()  # ranks split the global batch
    seen = set(map(bytes, first.numpy()))
    for _ in range(len(train) // 4 + 1):
        seen.update(map(bytes, batches.next_batch()["input_ids"].numpy()))
    assert batches.epoch == 1  # wrapped into a new epoch

    def row(i):
        return bytes(np.asarray(tokens.tokens[i * 16 : i * 16 + 17], dtype=np.int64))

    # the epoch visited every training sequence, and only training ones (by content: validation
    # rows may repeat a training row's text, so they are not compared)
    assert seen == {row(i) for i in train}


def test_data_errors(tmp_path, tiny_tokenizer):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="corpus is empty"):
        tokenize_corpus([str(tmp_path / "empty.jsonl")], tiny_tokenizer["dir"], tmp_path / "d")
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match="no 'text' field"):
        list(iter_documents([str(tmp_path / "bad.jsonl")]))
    with pytest.raises(DataError, match="corpus file not found"):
        list(iter_documents(["bundled:nope.txt"]))


def test_batch_sources_share_one_resumable_walk(tmp_path):
    """Packed, tensor and shuffled (SFT) batches all walk items through train.data.ShuffledSource:
    each epoch is a permutation of every item, and a source restored from state_dict() mid-epoch
    continues with the batches the original gives."""
    from llmlab.train.data import ShuffledSource, TensorBatches
    from llmlab.train.sft_data import ShuffledBatches

    tensors = TensorBatches({"x": torch.arange(10)}, batch_size=4, seed=1)
    shuffled = ShuffledBatches(list(range(10)), 4, collate_fn=lambda rows: {"x": rows}, seed=1)
    for source in (tensors, shuffled):
        assert isinstance(source, ShuffledSource)
        first_epoch = [int(v) for _ in range(2) for v in source.next_batch()["x"]]
        state = source.state_dict()  # 8 of 10 items into epoch 0
        after = [[int(v) for v in source.next_batch()["x"]] for _ in range(3)]
        assert sorted(first_epoch + after[0][:2]) == list(range(10))  # epoch 0 is a permutation
        assert source.epoch == 1
        source.load_state_dict(state)
        assert [[int(v) for v in source.next_batch()["x"]] for _ in range(3)] == after
    # the SFT source keeps its pre-refactor order (seed + epoch), so resumed runs stay exact
    assert first_epoch == [int(i) for i in np.random.default_rng(1).permutation(10)[:8]]
