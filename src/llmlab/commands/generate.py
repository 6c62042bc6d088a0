"""`llmlab generate`: raw text completion (no chat template unless --chat).

llmlab generate "The three primary colors are" --max-tokens 40
llmlab generate --chat --temperature 0.8 --top-p 0.9 --seed 3 "Write a haiku about GPUs"
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import (
    add_model_options,
    add_sampling_options,
    generation_config,
    load_model,
    write,
)


def register(subparsers):
    p = subparsers.add_parser(
        "generate",
        parents=[common_parser()],
        help="complete a text prompt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="the text to continue")
    p.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user message in the chat template"
    )
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--no-stream", action="store_true", help="print the whole completion at the end")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llmlab.errors import LlmlabError
    from llmlab.generation import stream
    from llmlab.tokenize.tokenizer import apply_chat

    if not args.prompt.strip():
        raise LlmlabError("the prompt is empty")
    config = generation_config(args)
    model, tokenizer = load_model(args)
    if args.chat:
        prompt_ids = apply_chat(
            tokenizer, [{"role": "user", "content": args.prompt}], system=args.system
        )
    else:
        prompt_ids = tokenizer.encode(args.prompt)
    pieces = stream(model, tokenizer, prompt_ids, config)
    if args.no_stream:
        write("".join(pieces))
    else:
        for piece in pieces:
            write(piece)
    write("\n")
    return 0
