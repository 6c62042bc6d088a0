"""GGUF load time: llmlab's reader and tokenizer loader beside transformers' GGUF loading.

Both read a packaged GGUF (SmolLM2-135M-Instruct Q4_1 by default, or Gemma 3 270M Q4_K_M) to a
complete float32 model in this process — `llmlab.load(..., tokenizer=False)` against
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)` — and load the tokenizer each way,
alternating, best of `--repeats`, so the ratio holds on a busy machine:

    .venv/bin/python bench/gguf_load.py [--model gemma3-270m] [--repeats 2] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import llmlab
from llmlab.registry import resolve
from llmlab.tokenize.tokenizer import load_tokenizer


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF progress bar
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(args.model)
    folder, name = str(path.parent), path.name
    rows = {
        "model, fp32 (1)": (
            best_time(
                lambda: llmlab.load(path, device="cpu", dtype="float32", tokenizer=False),
                args.repeats,
            ),
            best_time(
                lambda: AutoModelForCausalLM.from_pretrained(folder, gguf_file=name), args.repeats
            ),
        ),
        "tokenizer": (
            best_time(lambda: load_tokenizer(path), args.repeats),
            best_time(lambda: AutoTokenizer.from_pretrained(folder, gguf_file=name), args.repeats),
        ),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "load_average": os.getloadavg()[0],
                    **{
                        k: {"llmlab_s": a, "transformers_s": b, "speedup": b / a}
                        for k, (a, b) in rows.items()
                    },
                }
            )
        )
        return
    print(
        f"{args.model}; load average {os.getloadavg()[0]:.1f}\n"
        "(1) llmlab.load(tokenizer=False) vs AutoModelForCausalLM.from_pretrained(gguf_file=...)"
    )
    print(f"{'what':<28}{'llmlab s':>10}{'transformers s':>16}{'speed-up':>10}")
    for what, (ours, theirs) in rows.items():
        print(f"{what:<28}{ours:>10.2f}{theirs:>16.2f}{theirs / ours:>9.1f}x")


if __name__ == "__main__":
    main()
