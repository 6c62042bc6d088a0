"""`llmlab quantize`: write a quantized copy of a model as a folder that `llmlab.load`, the engine
and `llmlab serve --model DIR` load.

    llmlab quantize --model smollm2-135m-instruct --method gptq --bits 4 --group-size 128 \\
        --calib bundled:stories-en.txt --calib bundled:notes-zh.txt --out runs/smollm2-gptq4
    llmlab quantize --model runs/pretrain-tiny/final --method static --bits 8 --observer percentile --out runs/tiny-w8a8
    llmlab quantize --model M --method dynamic --bits 8 --out DIR     # W8A8, per-token activations
    llmlab quantize --model M --method dynamic --bits 8 --keep-float 2 --out DIR   # mixed: 2 groups float
    llmlab quantize --model M --method dynamic --bits 8 --weights gptq --activations asymmetric --out DIR
    llmlab quantize --model M --method dynamic --bits 8 --outliers 8 --out DIR    # mixed: 8 input channels float
    llmlab quantize --model M --method dynamic --bits 8 --activation-group-size 64 --out DIR  # a grid per 64 inputs
    llmlab quantize --model M --method rtn --bits 4 --out DIR         # int4 round-to-nearest (or --bits 8)
    llmlab quantize --model M --method qat --bits 4 --qat-steps 100 --out DIR

Calibration text (gptq, static, qat) is the first 90 % of the lines of each --calib file (the
last 10 % are the held-out split `llmlab eval perplexity --split heldout` measures on). A group
size that does not divide a layer's inputs falls back to the largest of 256/128/64/32 that does.
See docs/quantization.md.
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import (
    non_negative_int,
    positive_float,
    positive_int,
)


def register(subparsers):
    from llmlab.quant.flows import METHODS  # no torch import: `llmlab --help` stays fast

    p = subparsers.add_parser(
        "quantize",
        parents=[common_parser()],
        help="quantize a model's linear layers and write a loadable folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="packaged name, HF folder or .gguf")
    p.add_argument("--method", required=True, choices=list(METHODS))
    p.add_argument(
        "--bits",
        type=int,
        required=True,
        choices=[8, 4, 3, 2],
        help="8 or 4; 3 and 2 (rtn, qat) use the int4 layout with fewer codes",
    )
    p.add_argument(
        "--group-size", type=positive_int, default=128, help="int4 inputs per group (default 128)"
    )
    p.add_argument(
        "--calib",
        action="append",
        default=None,
        help="calibration text, bundled:NAME or a path (repeatable; default: the bundled "
        "stories-en.txt and notes-zh.txt)",
    )
    p.add_argument(
        "--samples", type=positive_int, default=16, help="calibration sequences (default 16)"
    )
    p.add_argument(
        "--seq-len", type=positive_int, default=256, help="tokens per calibration sequence"
    )
    p.add_argument(
        "--observer",
        default="histogram-mse",
        choices=["minmax", "moving-average", "histogram-mse", "histogram-entropy", "percentile"],
        help="activation observer for --method static (default histogram-mse)",
    )
    p.add_argument(
        "--smooth",
        type=smooth_strength,
        default="search",
        help="SmoothQuant for --method static/dynamic: 'search' (default: α per layer group, "
        "least output error on the calibration split), an α between 0 and 1 for every layer, "
        "or 0 = off — activation outlier channels moved into the weights",
    )
    p.add_argument(
        "--keep-float",
        type=non_negative_int,
        default=0,
        help="static/dynamic: keep this many groups of linears (those with the largest "
        "calibration error) in float — mixed precision (default 0: pure W8A8)",
    )
    p.add_argument(
        "--float-layers",
        default="",
        help="static/dynamic: comma-separated linears to keep float by name, e.g. lm_head",
    )
    p.add_argument(
        "--outliers",
        type=non_negative_int,
        default=0,
        help="static/dynamic: keep this many input channels of every linear (the largest "
        "calibration max |x|) out of int8, in float — LLM.int8()-style mixed precision",
    )
    p.add_argument(
        "--activation-group-size",
        type=positive_int,
        default=None,
        help="dynamic: one int8 grid per run of this many input channels of each token "
        "(like llama.cpp's 8-bit activation blocks) instead of one per token",
    )
    p.add_argument(
        "--weights",
        choices=["rtn", "gptq"],
        default="rtn",
        help="--method dynamic: int8 weight codes by round-to-nearest (default) or GPTQ "
        "(error feedback through the calibration Hessian, layer by layer)",
    )
    p.add_argument(
        "--activations",
        choices=["symmetric", "asymmetric"],
        default="symmetric",
        help="--method dynamic: each token's int8 grid over ±max |x| (default) or over its own "
        "[min, max] (asymmetric: one more bit for one-sided activations)",
    )
    p.add_argument(
        "--qat-steps", type=positive_int, default=100, help="fine-tuning steps for --method qat"
    )
    p.add_argument(
        "--qat-lr", type=positive_float, default=1e-4, help="learning rate for --method qat"
    )
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    p.set_defaults(func=run)


def smooth_strength(text: str) -> float | str:
    """'search' or α in [0, 1]."""
    if text == "search":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 'search' or between 0 and 1, got {text}")
    return value


def run(args) -> int:
    import time

    import llmlab
    from llmlab.device import set_threads
    from llmlab.errors import LlmlabError
    from llmlab.formats.quantized import is_quantized_config
    from llmlab.quant.flows import check_method, quantize_model_with
    from llmlab.quant.save import folder_bytes, save_quantized
    from llmlab.registry import resolve

    check_method(args.method, args.bits)
    for name, value in (("--samples", args.samples), ("--seq-len", args.seq_len)):
        if value < 1:
            raise LlmlabError(f"{name} must be at least 1, got {value}")
    path = resolve(args.model)
    if path.is_dir() and (path / "config.json").is_file():
        from llmlab.formats.hf import read_config

        if is_quantized_config(read_config(path)):
            raise LlmlabError(f"{args.model} is already quantized: quantize its float original")
    set_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = llmlab.load(args.model, device="cpu", dtype="float32")
    model, info = quantize_model_with(
        model,
        tokenizer,
        args.method,
        args.bits,
        group_size=args.group_size,
        calib=args.calib,
        samples=args.samples,
        seq_len=args.seq_len,
        observer=args.observer,
        smooth=args.smooth or None,
        keep_float=args.keep_float,
        weights=args.weights,
        activations=args.activations,
        float_layers=[n for n in args.float_layers.split(",") if n],
        outliers=args.outliers,
        activation_group_size=args.activation_group_size,
        qat_steps=args.qat_steps,
        qat_lr=args.qat_lr,
    )
    info["source"] = str(args.model)
    out = save_quantized(model, args.out, tokenizer, info)
    print(
        f"wrote {out} ({folder_bytes(out) / 2**20:.1f} MiB, {args.method} {args.bits}-bit, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    return 0
