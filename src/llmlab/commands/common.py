"""Options and helpers shared by the commands that load a model and generate text."""

from __future__ import annotations

import argparse
import sys

from llmlab.registry import DEFAULT_CHAT_MODEL


def add_model_options(parser: argparse.ArgumentParser, default_model: str = DEFAULT_CHAT_MODEL):
    parser.add_argument(
        "--model",
        default=default_model,
        help=f"packaged name, HF folder or .gguf (default {default_model})",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, mps (default: the best available)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="default: float32 on CPU, bfloat16 on GPU",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")


def add_sampling_options(parser: argparse.ArgumentParser, temperature: float = 0.0):
    parser.add_argument("--max-tokens", type=int, default=256, help="most new tokens (default 256)")
    parser.add_argument(
        "--temperature", type=float, default=temperature, help=f"0 = greedy (default {temperature})"
    )
    parser.add_argument(
        "--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = off)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    parser.add_argument(
        "--repetition-penalty", type=float, default=1.0, help=">1 discourages repeats (1 = off)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def generation_config(args):
    from llmlab.generation import GenerationConfig

    return GenerationConfig(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=list(args.stop),
    )


def load_model(args):
    """Load the model named by --model with a spinner on stderr; return (model, tokenizer)."""
    from rich.console import Console

    import llmlab
    from llmlab.device import set_threads

    set_threads(args.threads)
    with Console(stderr=True).status(f"loading {args.model} …"):
        return llmlab.load(args.model, device=args.device, dtype=args.dtype)


def write(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()
