"""`llmlab train tokenizer | pretrain | bert`: train a tokenizer, a causal LM, or a BERT encoder.

    llmlab train tokenizer --corpus bundled:stories-en.txt bundled:notes-zh.txt --vocab-size 4096 --out runs/tokenizer
    llmlab train pretrain --config recipes/pretrain-tiny.yaml --set train.steps=200
    llmlab train bert --config recipes/bert-tiny.yaml
    torchrun --nproc_per_node 2 -m llmlab.train pretrain --config recipes/pretrain-tiny.yaml   # DDP

Config files are YAML; `--set key=value` overrides any key (dotted path, value parsed as YAML).
"""

from __future__ import annotations

import argparse
import json

from llmlab.commands.common import positive_int


def add_train_subcommands(sub, parents: list) -> None:
    tok = sub.add_parser("tokenizer", parents=parents, help="train a byte-level BPE tokenizer")
    tok.add_argument(
        "--corpus", nargs="+", required=True, help="txt / jsonl / parquet files, or bundled:NAME"
    )
    tok.add_argument("--vocab-size", type=positive_int, default=4096)
    tok.add_argument("--min-frequency", type=positive_int, default=2)
    tok.add_argument("--text-field", default="text", help="jsonl/parquet field holding the text")
    tok.add_argument(
        "--bert", action="store_true", help="add [CLS] [SEP] [MASK] for encoder pretraining"
    )
    tok.add_argument("--out", required=True, help="output folder (a Hugging Face tokenizer folder)")
    tok.set_defaults(func=run_tokenizer)
    for name, helptext, handler in [
        ("pretrain", "pretrain a causal LM (llmlab Llama) from scratch", run_pretrain),
        ("bert", "pretrain BERT (MLM + NSP), then fine-tune a classifier", run_bert),
    ]:
        p = sub.add_parser(name, parents=parents, help=helptext)
        p.add_argument("--config", help="YAML config (see recipes/)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set optim.lr=1e-3 (repeatable)",
        )
        p.set_defaults(func=handler)


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    train = subparsers.add_parser(
        "train",
        parents=[common_parser()],
        help="train tokenizers and models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = train.add_subparsers(dest="train_command", metavar="WHAT")
    sub.required = True
    add_train_subcommands(sub, [common_parser()])
    from llmlab.commands.posttrain import add_posttrain_subcommands  # sft|lora|reward|dpo|ppo|grpo

    add_posttrain_subcommands(sub, [common_parser()])


def run_tokenizer(args) -> int:
    from llmlab.train.tokenizer_training import train_tokenizer

    tokenizer = train_tokenizer(
        args.corpus, args.out, args.vocab_size, args.min_frequency, args.text_field, args.bert
    )
    size = len(tokenizer)
    # BPE stops merging once no pair occurs --min-frequency times: a small corpus gives fewer
    # tokens than asked, which would otherwise look like a bug.
    short = (
        f" (fewer than --vocab-size {args.vocab_size}: no pair of tokens left that occurs"
        f" --min-frequency {args.min_frequency} times in this corpus; more text or a lower"
        " --min-frequency gives more)"
        if size < args.vocab_size
        else ""
    )
    print(f"tokenizer with {size} tokens{short} written to {args.out}")
    return 0


def run_pretrain(args) -> int:
    from llmlab.train.config import PretrainConfig, load_config
    from llmlab.train.pretrain import run_pretrain as pretrain

    summary = pretrain(load_config(PretrainConfig, args.config, args.overrides))
    if "model_dir" in summary:
        print(json.dumps(summary, indent=2))
    return 0


def run_bert(args) -> int:
    from llmlab.train.bert import run_bert as bert
    from llmlab.train.config import BertPretrainConfig, load_config

    summary = bert(load_config(BertPretrainConfig, args.config, args.overrides))
    if summary:
        print(json.dumps(summary, indent=2))
    return 0
