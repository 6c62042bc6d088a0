"""`llmlab train sft|lora|reward|dpo|ppo|grpo` (post-training) and `llmlab sample best-of-n`.

    llmlab train lora --config recipes/sft-lora-smollm2.yaml --set train.steps=20
    llmlab train dpo  --config recipes/dpo-tiny.yaml
    llmlab train grpo --config recipes/grpo-arith.yaml --set rl.group_size=8
    llmlab sample best-of-n --model smollm2-135m-instruct --prompts bundled:arith.jsonl --n 4 --keep 1 \\
        --reward exact_answer --out runs/bon/sft.jsonl

Configs are YAML (see recipes/) with `--set key=value` overrides; sections: model, lora, data, dpo,
rl and the trainer's (train, optim, diagnostics, checkpoint, distributed).
"""

from __future__ import annotations

import argparse
import json
import sys

from llmlab.commands.common import non_negative_float, positive_int

METHODS = {
    "sft": "supervised fine-tuning on chat conversations (loss on assistant turns)",
    "lora": "SFT with LoRA adapters (saved in PEFT format)",
    "reward": "train a reward model (Bradley–Terry on preference pairs)",
    "dpo": "direct preference optimisation (sigmoid or IPO loss)",
    "ppo": "RLHF with PPO (value head, KL to a frozen reference, GAE)",
    "grpo": "group relative policy optimisation with rule rewards",
}


def add_posttrain_subcommands(sub, parents: list) -> None:
    for method, helptext in METHODS.items():
        p = sub.add_parser(
            method,
            parents=parents,
            help=helptext,
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", help="YAML config (see recipes/)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set train.steps=20 (repeatable)",
        )
        p.set_defaults(func=run_method, method=method)


def run_method(args) -> int:
    from llmlab.posttrain.run import PostTrainConfig, run
    from llmlab.train.config import load_config

    summary = run(args.method, load_config(PostTrainConfig, args.config, args.overrides))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    sample = subparsers.add_parser(
        "sample", parents=[common_parser()], help="sampling workflows (best-of-n)"
    )
    sub = sample.add_subparsers(dest="sample_command", metavar="WHAT")
    sub.required = True
    p = sub.add_parser(
        "best-of-n",
        parents=[common_parser()],
        help="rejection sampling → SFT jsonl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="packaged name, HF folder or .gguf"
    )
    p.add_argument("--adapter", default="", help="PEFT adapter folder to apply")
    p.add_argument(
        "--prompts",
        required=True,
        help="jsonl with a prompt (and e.g. answer) per line, or bundled:NAME",
    )
    p.add_argument("--n", type=positive_int, default=4, help="samples per prompt")
    p.add_argument("--keep", type=positive_int, default=1, help="best samples kept per prompt")
    p.add_argument(
        "--reward", default="exact_answer", help="rule spec, e.g. exact_answer+0.2*format"
    )
    p.add_argument(
        "--reward-model", default="", help="a `train reward` model folder (overrides --reward)"
    )
    p.add_argument(
        "--min-reward",
        type=float,
        default=None,
        help="keep samples scoring at least this (default: those passing the reward's pass/fail "
        "rules, e.g. correct answers for exact_answer)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--temperature", type=non_negative_float, default=0.8)
    p.add_argument("--system", default="", help="system prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output SFT jsonl (messages format)")
    p.set_defaults(func=run_best_of_n)


def run_best_of_n(args) -> int:
    from llmlab.posttrain.best_of_n import best_of_n

    stats = best_of_n(
        args.model,
        args.prompts,
        args.out,
        n=args.n,
        keep=args.keep,
        reward=args.reward,
        reward_model=args.reward_model,
        min_reward=args.min_reward,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        system=args.system or None,
        adapter=args.adapter,
        seed=args.seed,
    )
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    print(stats["message"], file=sys.stderr)
    return 0
