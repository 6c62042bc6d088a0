"""Options and helpers shared by the commands that load a model and generate text.

Numbers a user types are checked by the argparse `type=` functions below (positive_int,
probability, ...), so `--threads 0` or `--top-p 2` stop at parse time with one line naming the
option. `console()` gives a rich Console that never cuts a name or path when stdout is a pipe
or a log file.
"""

from __future__ import annotations

import argparse
import sys

from llmlab.registry import DEFAULT_CHAT_MODEL


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got '{text}'") from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def probability(text: str) -> float:
    """A probability mass in (0, 1], as top-p takes."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def port(text: str) -> int:
    value = _number(text, int)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def add_model_options(
    parser: argparse.ArgumentParser, default_model: str = DEFAULT_CHAT_MODEL, adapter: bool = True
):
    parser.add_argument(
        "--model",
        default=default_model,
        help=f"packaged name, HF folder or .gguf (default {default_model})",
    )
    if adapter:
        parser.add_argument(
            "--adapter",
            default=None,
            metavar="DIR",
            help="a LoRA adapter (PEFT folder, e.g. a `train lora` run's adapter/) on top of --model",
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
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for PyTorch (at least 1)"
    )


def add_sampling_options(parser: argparse.ArgumentParser, temperature: float = 0.0):
    parser.add_argument(
        "--max-tokens", type=positive_int, default=256, help="most new tokens (default 256)"
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=temperature,
        help=f"0 = greedy (default {temperature})",
    )
    parser.add_argument(
        "--top-k",
        type=non_negative_int,
        default=0,
        help="sample among the k likeliest tokens (0 = off)",
    )
    parser.add_argument(
        "--top-p", type=probability, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=1.0,
        help=">1 discourages repeats (1 = off)",
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


def load_model(args, command: str = "generate text"):
    """`llmlab.load` of --model (+ --adapter) with a spinner on stderr; return (model, tokenizer).
    An embedding model is refused before any weight is read."""
    from llmlab.device import set_threads
    from llmlab.loading import load, require_generative

    set_threads(args.threads)
    require_generative(args.model, command)
    adapters = [args.adapter] if getattr(args, "adapter", None) else []
    with console(stderr=True).status(f"loading {args.model} …"):
        # Merged: one adapter for the whole session, so decoding costs what the base costs.
        return load(
            args.model,
            device=args.device,
            dtype=args.dtype,
            adapters=adapters,
            merge_adapters=True,
        )


def console(stderr: bool = False):
    """A rich Console; when the stream is not a terminal (a pipe, a log), as wide as any line
    needs, so tables never cut names or paths with '…'."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True, no_color=True)


def write(text: str):
    sys.stdout.write(text)
    sys.stdout.flush()
