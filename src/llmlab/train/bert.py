"""BERT from scratch: MLM + NSP pretraining, then a sequence-classification fine-tune.

    llmlab train tokenizer --bert --corpus bundled:stories-en.txt --vocab-size 1024 --out runs/bert-tokenizer
    llmlab train bert --config recipes/bert-tiny.yaml

Pretraining pairs: documents are split into sentences; segment A is a run of whole sentences
filling about half the sequence, B is the text that follows it in the same document (50%, NSP
label 0) or a span of another document (50%, label 1); each pair is `[CLS] A [SEP] B [SEP]`, segment ids 0/1, padded to data.seq_len. Masking (15%,
80/10/10) happens in the objective, fresh each step. The fine-tune loads the pretrained encoder
into `BertForSequenceClassification` and trains on `data.classification` (jsonl: text, label),
holding out 20% to report accuracy. Outputs: <run_dir>/model (BertForPreTraining, HF folder),
<run_dir>/classifier (BertForSequenceClassification, HF folder), metrics in metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import torch

from llmlab.train.config import BertPretrainConfig, ConfigError, validate
from llmlab.train.data import (
    DataError,
    TensorBatches,
    iter_documents,
    load_tokenizer,
    resolve_corpus_path,
)

# After . ! ? (or one of them plus a closing quote) and whitespace; after 。！？ directly.
_SENTENCE_END = re.compile(r'(?:(?<=[.!?])|(?<=[.!?]["\u201d\u2019]))\s+|(?<=[。！？])(?=\S)')


def split_sentences(document: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(document) if s.strip()]


class PairEncoder:
    """[CLS] A [SEP] (B [SEP]) → fixed-length ids, segment ids and attention mask."""

    def __init__(self, tokenizer, seq_len: int):
        ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]", "<|pad|>")}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(
                f"tokenizer lacks {', '.join(missing)}; train it with `llmlab train tokenizer --bert`"
            )
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.cls, self.sep, self.mask, self.pad = (
            ids["[CLS]"],
            ids["[SEP]"],
            ids["[MASK]"],
            ids["<|pad|>"],
        )

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def pack(self, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int]]:
        budget = self.seq_len - (3 if b is not None else 2)
        b = b or []
        while len(a) + len(b) > budget:  # trim the longer segment, as BERT does
            if len(a) >= len(b):
                a = a[:-1]
            else:
                b = b[:-1]
        ids = [self.cls, *a, self.sep] + ([*b, self.sep] if b else [])
        segments = [0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2)
        return ids, segments

    def to_tensors(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        n = len(rows)
        input_ids = torch.full((n, self.seq_len), self.pad, dtype=torch.long)
        token_types = torch.zeros((n, self.seq_len), dtype=torch.long)
        attention = torch.zeros((n, self.seq_len), dtype=torch.long)
        for i, (ids, segments) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            token_types[i, : len(ids)] = torch.tensor(segments)
            attention[i, : len(ids)] = 1
        return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": attention}


def _span(sentences: list[list[int]], start: int, budget: int) -> tuple[list[int], int]:
    """Whole sentences from `start` until about `budget` tokens; returns (tokens, next index)."""
    tokens, i = list(sentences[start]), start + 1
    while i < len(sentences) and len(tokens) + len(sentences[i]) <= budget:
        tokens += sentences[i]
        i += 1
    return tokens, i


def build_nsp_pairs(
    corpus: list[str], encoder: PairEncoder, seed: int, text_field: str = "text"
) -> dict:
    """Segments of whole sentences filling about half the sequence each, as in BERT: B is the text
    that follows A (label 0) or, half the time, a span from another document (label 1)."""
    documents = [split_sentences(d) for d in iter_documents(corpus, text_field)]
    documents = [d for d in documents if len(d) >= 2]
    if len(documents) < 2:
        raise DataError(
            "the corpus needs at least two documents with two or more sentences for NSP"
        )
    encoded = [encoder.encode_texts(d) for d in documents]
    budget = (encoder.seq_len - 3) // 2
    rng = random.Random(seed)
    rows, labels = [], []
    for doc_index, sentences in enumerate(encoded):
        start = 0
        while start < len(sentences) - 1:
            a, after = _span(sentences, start, budget)
            after = min(after, len(sentences) - 1)  # leave at least one sentence for B
            a = a if after > start else list(sentences[start])
            after = max(after, start + 1)
            if rng.random() < 0.5:
                b, _ = _span(sentences, after, budget)
                label = 0
            else:
                other = rng.randrange(len(encoded) - 1)
                other += other >= doc_index  # any document but this one
                b, _ = _span(encoded[other], rng.randrange(len(encoded[other])), budget)
                label = 1
            rows.append(encoder.pack(a, b))
            labels.append(label)
            start = after
    tensors = encoder.to_tensors(rows)
    tensors["nsp_labels"] = torch.tensor(labels)
    return tensors


def build_classification(paths: list[str], encoder: PairEncoder) -> dict:
    texts, labels = [], []
    for name in paths:
        for number, line in enumerate(
            resolve_corpus_path(name).read_text(encoding="utf-8").splitlines(), 1
        ):
            if line.strip():
                row = json.loads(line)
                if "text" not in row or "label" not in row:
                    raise DataError(f"{name}:{number}: classification rows need 'text' and 'label'")
                texts.append(row["text"])
                labels.append(int(row["label"]))
    if not texts:
        raise DataError(f"the classification data is empty: {', '.join(paths)}")
    tensors = encoder.to_tensors([encoder.pack(ids) for ids in encoder.encode_texts(texts)])
    tensors["labels"] = torch.tensor(labels)
    return tensors


def split_rows(tensors: dict, holdout: float, seed: int) -> tuple[dict, dict]:
    count = len(tensors["input_ids"])
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    cut = count - max(1, int(count * holdout))
    return (
        {k: v[order[:cut]] for k, v in tensors.items()},
        {k: v[order[cut:]] for k, v in tensors.items()},
    )


def batches_of(tensors: dict, batch_size: int) -> list[dict]:
    count = len(next(iter(tensors.values())))
    return [
        {k: v[i : i + batch_size] for k, v in tensors.items()} for i in range(0, count, batch_size)
    ]


def bert_config(model_keys: dict, vocab_size: int, pad_id: int, seq_len: int, num_labels: int = 2):
    from llmlab.models.bert import BertConfig

    known = {f.name for f in dataclasses.fields(BertConfig)}
    unknown = sorted(set(model_keys) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key 'model.{unknown[0]}' (BERT config keys: {', '.join(sorted(known))})"
        )
    config = BertConfig(
        **{"vocab_size": vocab_size, "pad_token_id": pad_id, "num_labels": num_labels, **model_keys}
    )
    if seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_len {seq_len} is beyond the model's context "
            f"(max_position_embeddings {config.max_position_embeddings})"
        )
    return config


def run_bert(config: BertPretrainConfig, finetune: bool = True) -> dict:
    from transformers import PreTrainedTokenizerFast

    from llmlab.formats.hf import save_hf_folder
    from llmlab.models.bert import BertForPreTraining, BertForSequenceClassification
    from llmlab.train.objectives.mlm_nsp import MlmNspObjective, SequenceClassificationObjective
    from llmlab.train.trainer import Trainer

    validate(config)
    data, loop = config.data, config.train
    tokenizer = load_tokenizer(data.tokenizer, bert=True)
    encoder = PairEncoder(tokenizer, data.seq_len)
    model_config = bert_config(config.model, tokenizer.get_vocab_size(), encoder.pad, data.seq_len)
    if finetune and not data.classification:
        raise ConfigError(
            "data.classification is empty: give a jsonl of {text, label} for the fine-tune"
        )
    pairs = build_nsp_pairs(data.corpus, encoder, loop.seed, data.text_field)
    train_pairs, val_pairs = split_rows(pairs, max(data.val_fraction, 0.01), loop.seed)
    torch.manual_seed(loop.seed)
    model = BertForPreTraining(model_config)
    specials = [encoder.cls, encoder.sep, encoder.pad, encoder.mask]
    objective = MlmNspObjective(
        encoder.mask, model_config.vocab_size, specials, data.mlm_probability
    )
    trainer = Trainer(
        model,
        objective,
        TensorBatches(train_pairs, loop.batch_size, loop.seed),
        config,
        eval_data=batches_of(val_pairs, loop.batch_size),
    )
    summary = {"pretrain": trainer.fit(), "pairs": len(pairs["input_ids"])}
    hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(data.tokenizer)
    run_dir = Path(config.run_dir)
    save_hf_folder(model, run_dir / "model", tokenizer=hf_tokenizer)
    if finetune:
        rows = build_classification(data.classification, encoder)
        train_rows, test_rows = split_rows(rows, 0.2, loop.seed)
        classifier = BertForSequenceClassification(model_config)
        classifier.bert.load_state_dict(model.bert.state_dict())  # the pretrained encoder
        tune = dataclasses.replace(
            config,
            run_dir=str(run_dir / "finetune"),
            optim=dataclasses.replace(config.optim, lr=data.finetune_lr),
            train=dataclasses.replace(loop, steps=data.finetune_steps, eval_every=0),
            checkpoint=dataclasses.replace(config.checkpoint, every=0, resume=False),
        )
        tuner = Trainer(
            classifier,
            SequenceClassificationObjective(),
            TensorBatches(train_rows, loop.batch_size, loop.seed),
            tune,
            eval_data=batches_of(test_rows, loop.batch_size),
        )
        tuner.config.train.eval_batches = len(test_rows["labels"])  # score the whole held-out set
        summary["finetune"] = tuner.fit()
        save_hf_folder(classifier, run_dir / "classifier", tokenizer=hf_tokenizer)
        tuner.close()
    trainer.log.write({"kind": "final", **summary})
    trainer.close()
    return summary
