"""Reference generation speed: llmlab's single-sequence generator beside Hugging Face `generate()`.

Both run the packaged SmolLM2-135M-Instruct (dequantized to fp32 from its Q4_1 GGUF) on the same
prompt, greedy, in this process, so the ratio holds even on a busy machine:

    .venv/bin/python bench/generate.py [--tokens 64] [--threads 2] [--json]

(The batched serving engine has its own benchmark, bench/engine.py.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import llmlab
from llmlab.generation import GenerationConfig, generate_token_ids
from llmlab.registry import resolve


def timed(fn, repeats: int = 2):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    gguf = resolve("smollm2-135m-instruct")
    model, tokenizer = llmlab.load(gguf)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    prompt = tokenizer.encode(
        "Explain in detail why residual connections help deep networks train:"
    )
    config = GenerationConfig(max_tokens=args.tokens)

    def ours():
        return list(generate_token_ids(model, prompt, config, stop_ids=set()))

    def theirs():
        with torch.inference_mode():
            out = hf.generate(
                torch.tensor([prompt]),
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return out[0, len(prompt) :].tolist()

    ours(), theirs()  # warm-up
    t_ours, ids_ours = timed(ours)
    t_hf, ids_hf = timed(theirs)
    row = {
        "tokens": args.tokens,
        "threads": torch.get_num_threads(),
        "llmlab_tok_s": round(len(ids_ours) / t_ours, 1),
        "hf_tok_s": round(len(ids_hf) / t_hf, 1),
        "ratio": round((len(ids_ours) / t_ours) / (len(ids_hf) / t_hf), 2),
        "same_tokens": ids_ours == ids_hf[: len(ids_ours)],
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(f"SmolLM2-135M fp32 greedy, {args.tokens} new tokens, {row['threads']} threads")
        print(f"  llmlab reference generate : {row['llmlab_tok_s']:7.1f} tok/s")
        print(f"  HF transformers generate  : {row['hf_tok_s']:7.1f} tok/s")
        print(
            f"  ratio llmlab / HF         : {row['ratio']:.2f}x   identical tokens: {row['same_tokens']}"
        )


if __name__ == "__main__":
    main()
