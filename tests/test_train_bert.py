"""BERT pretraining: MLM masking statistics (15% picked; 80% [MASK] / 10% random / 10% kept; never
special tokens), NSP pairs 50% random, NSP accuracy beats chance on the bundled stories, and the
classification fine-tune on the bundled sentiment task."""

import torch
from train_fixtures import tiny_bert_tokenizer  # noqa: F401 (fixture)

from llmlab.train.bert import PairEncoder, build_nsp_pairs, split_sentences
from llmlab.train.objectives.mlm_nsp import IGNORE, mask_tokens


def test_mlm_masking_statistics():
    g = torch.Generator().manual_seed(0)
    vocab, mask_id = 1000, 3
    ids = torch.randint(10, vocab, (400, 512), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] / [SEP] positions are never picked
    masked, labels = mask_tokens(ids, special, mask_id, vocab, 0.15, generator=g)
    picked = labels != IGNORE
    eligible = (~special).sum()
    assert abs(picked.sum() / eligible - 0.15) < 0.003
    assert not picked[special].any()
    assert torch.equal(labels[picked], ids[picked])  # labels are the original tokens
    assert torch.equal(masked[~picked], ids[~picked])  # unpicked tokens untouched
    n = picked.sum()
    to_mask = (masked[picked] == mask_id).float().sum() / n
    kept = (masked[picked] == ids[picked]).float().sum() / n
    replaced = ((masked[picked] != ids[picked]) & (masked[picked] != mask_id)).float().sum() / n
    assert abs(to_mask - 0.8) < 0.01
    assert abs(kept - 0.1) < 0.01  # (+ the rare random draw that hits the same token: 1/vocab)
    assert abs(replaced - 0.1) < 0.01


def test_nsp_pairs_half_random_and_well_formed(tiny_bert_tokenizer):
    from llmlab.train.data import load_tokenizer

    encoder = PairEncoder(load_tokenizer(tiny_bert_tokenizer["dir"]), seq_len=48)
    pairs = build_nsp_pairs([tiny_bert_tokenizer["corpus"]], encoder, seed=0)
    labels = pairs["nsp_labels"].float()
    assert abs(labels.mean() - 0.5) < 0.05
    ids, types, attention = pairs["input_ids"], pairs["token_type_ids"], pairs["attention_mask"]
    assert (ids[:, 0] == encoder.cls).all()
    assert ((ids == encoder.sep).sum(-1) == 2).all()  # [CLS] A [SEP] B [SEP]
    assert (types[attention == 0] == 0).all() and (types.sum(-1) > 0).all()
    text = 'Pia said, "I will keep it safe." He ran. 梯度消失。然后'
    assert split_sentences(text) == [
        'Pia said, "I will keep it safe."',
        "He ran.",
        "梯度消失。",
        "然后",
    ]


def test_bert_pretrain_nsp_beats_chance_and_finetune(tmp_path):
    from llmlab.train.bert import run_bert
    from llmlab.train.config import BertPretrainConfig, load_config
    from llmlab.train.tokenizer_training import train_tokenizer

    train_tokenizer(["bundled:stories-en.txt"], tmp_path / "tok", vocab_size=1024, bert=True)
    overrides = [
        f"run_dir={tmp_path / 'run'}",
        f"data.tokenizer={tmp_path / 'tok'}",
        "train.steps=500",
        "optim.schedule=constant",
        "optim.warmup_steps=20",
        "train.eval_every=0",
        "train.eval_batches=64",
        "train.progress=false",
        "data.val_fraction=0.1",
        "data.finetune_steps=40",
        "diagnostics.every=100",
        "checkpoint.every=0",
    ]
    summary = run_bert(load_config(BertPretrainConfig, "recipes/bert-tiny.yaml", overrides))
    pretrain, finetune = summary["pretrain"], summary["finetune"]
    # ~1,000 held-out pairs: chance is 0.50 ± 0.016, so 0.58 is five standard deviations above it
    assert pretrain["eval_nsp_acc"] > 0.58, pretrain
    assert pretrain["eval_mlm_acc"] > 0.3, pretrain
    assert finetune["eval_accuracy"] > 0.9, finetune
    import transformers

    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "run" / "model")
    assert hf.config.vocab_size == 1024 or hf.config.vocab_size > 300
    assert (tmp_path / "run" / "classifier" / "config.json").exists()
