"""Shared helpers for the training tests: a tiny corpus, tokenizer and pretraining config."""

from importlib import resources
from pathlib import Path

import pytest
import yaml

STORIES = Path(str(resources.files("llmlab") / "assets" / "corpus" / "stories-en.txt"))


def tiny_corpus(folder: Path, stories: int = 150) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.txt"
    documents = STORIES.read_text(encoding="utf-8").split("\n\n")[:stories]
    path.write_text(
        "\n\n".join(documents) + "\n\n梯度消失和梯度爆炸都是因为反向传播过程中梯度连乘。\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from llmlab.train.tokenizer_training import train_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    corpus = tiny_corpus(folder / "corpus")
    train_tokenizer([str(corpus)], folder / "tok", vocab_size=320)
    return {"dir": str(folder / "tok"), "corpus": str(corpus)}


def tiny_pretrain_values(
    run_dir, tokenizer, steps=8, checkpoint_every=0, batch_size=4, **sections
) -> dict:
    values = {
        "run_dir": str(run_dir),
        "model": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
        "data": {
            "corpus": [tokenizer["corpus"]],
            "tokenizer": tokenizer["dir"],
            "seq_len": 32,
            "val_fraction": 0.05,
        },
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {
            "steps": steps,
            "batch_size": batch_size,
            "eval_batches": 2,
            "progress": False,
            "deterministic": True,
        },
        "diagnostics": {"every": 2},
        "checkpoint": {"every": checkpoint_every, "keep": 2},
    }
    for key, value in sections.items():
        values.setdefault(key, {}).update(value)
    return values


def tiny_pretrain_config(run_dir, tokenizer, **kwargs) -> Path:
    path = Path(str(run_dir) + ".yaml")
    path.write_text(yaml.safe_dump(tiny_pretrain_values(run_dir, tokenizer, **kwargs)))
    return path


@pytest.fixture(scope="session")
def tiny_bert_tokenizer(tmp_path_factory):
    from llmlab.train.tokenizer_training import train_tokenizer

    folder = tmp_path_factory.mktemp("bert-tokenizer")
    corpus = tiny_corpus(folder / "corpus", stories=300)
    train_tokenizer([str(corpus)], folder / "tok", vocab_size=320, bert=True)
    return {"dir": str(folder / "tok"), "corpus": str(corpus)}
