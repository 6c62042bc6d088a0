"""`llmlab eval`: measure a model. Subcommands: `perplexity` (more may join the group).

    llmlab eval perplexity --model smollm2-135m-instruct --data bundled:stories-en.txt --split heldout
    llmlab eval perplexity --model runs/smollm2-gptq4 --data notes.txt --window 512 --stride 256 --json

Perplexity is sliding-window (each token scored once, with up to window − stride tokens of
context; --stride = --window gives disjoint chunks); tokens/s is scored tokens over wall time.
--split heldout takes the last 10 % of the file's lines (the part `llmlab quantize` never
calibrates on), train the first 90 %, all the whole file.
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import positive_int


def register(subparsers):
    p = subparsers.add_parser(
        "eval",
        parents=[common_parser()],
        help="evaluate a model (perplexity, …)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="eval_command", metavar="EVAL")
    sub.required = True
    ppl = sub.add_parser(
        "perplexity",
        parents=[common_parser()],
        help="sliding-window perplexity of a causal LM on a text file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ppl.add_argument("--model", required=True, help="packaged name, HF/quantized folder or .gguf")
    ppl.add_argument("--data", required=True, help="text file: bundled:NAME or a path")
    ppl.add_argument("--split", default="all", choices=["all", "train", "heldout"])
    ppl.add_argument(
        "--window", type=positive_int, default=512, help="tokens per window (default 512)"
    )
    ppl.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="tokens between windows (default window/2)",
    )
    ppl.add_argument(
        "--max-tokens", type=positive_int, default=None, help="score only the first N tokens"
    )
    ppl.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    ppl.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    ppl.add_argument("--json", action="store_true", help="print one JSON object")
    ppl.set_defaults(func=run_perplexity)


def run_perplexity(args) -> int:
    import json
    from dataclasses import asdict

    import llmlab
    from llmlab.device import set_threads
    from llmlab.errors import LlmlabError
    from llmlab.quant.perplexity import perplexity
    from llmlab.quant.text_data import split_text

    if args.window < 2:
        raise LlmlabError(f"--window must be at least 2, got {args.window}")
    text = split_text(args.data, args.split)  # fails fast on a missing file, before loading
    set_threads(args.threads)
    model, tokenizer = llmlab.load(args.model, device="cpu", dtype=args.dtype)
    result = perplexity(model, tokenizer, text, args.window, args.stride, args.max_tokens)
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "data": args.data, "split": args.split, **asdict(result)}
            )
        )
    else:
        print(
            f"perplexity {result.perplexity:.3f} over {result.tokens} tokens "
            f"(window {result.window}, stride {result.stride}) at {result.tokens_per_s:.1f} tokens/s"
        )
    return 0
