"""Serving engine vs Hugging Face `generate()` (and llama.cpp when installed), one run, same model.

    .venv/bin/python bench/engine.py                      # SmolLM2-135M-Instruct, 64 new tokens
    .venv/bin/python bench/engine.py --tokens 32 --batch 16 --json out.json

Greedy decoding, fp32, the same chat prompts for everyone, EOS ignored so every run makes exactly
--tokens new tokens. Rows: single-stream tokens/s (one request), aggregate tokens/s with --batch
concurrent requests (HF: one padded batch), and our int8/int4 single stream beside llama.cpp on
the Q4_1 GGUF via `llama-cpp-python` (reported as missing when it is not installed).
Prints a table and the ratios; --profile adds a torch profiler table of one engine decode run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

QUESTIONS = ["What is dropout?", "Explain residual connections in two sentences.", "Name three sorting algorithms.",
             "Why do transformers use layer normalization?", "What is the capital of France?",
             "Write a haiku about GPUs.", "How does attention work?", "What is overfitting?"]


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    from llmlab.tokenize.tokenizer import apply_chat

    return [apply_chat(tokenizer, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(n)]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def hf_model_from(model):
    import transformers

    config = transformers.AutoConfig.for_model(**model.config.to_hf())
    hf = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    hf.load_state_dict(model.state_dict(), strict=False)
    hf.tie_weights()
    return hf


def hf_tokens_per_second(hf, tokenizer, prompts, tokens: int) -> float:
    longest = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        seconds, out = timed(lambda: hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens,
                                                 min_new_tokens=tokens, do_sample=False, pad_token_id=pad))
    return (out.shape[1] - longest) * len(prompts) / seconds


def engine_tokens_per_second(llm, prompts, tokens: int) -> float:
    from llmlab.engine import SamplingParams

    params = SamplingParams(max_tokens=tokens, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(max_tokens=2), progress=False)  # warm-up
    seconds, outs = timed(lambda: llm.generate(prompts, params, progress=False))
    return sum(len(o.token_ids) for o in outs) / seconds


def llama_cpp_tokens_per_second(path, prompt_text: str, tokens: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False)
    llm(prompt_text, max_tokens=2)
    seconds, out = timed(lambda: llm(prompt_text, max_tokens=tokens, temperature=0, ignore_eos=True))
    return out["usage"]["completion_tokens"] / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--batch", type=int, default=16, help="concurrent requests for the aggregate row")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every row (default: torch's)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print where an engine decode step spends its time")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import llmlab
    from llmlab.engine import LLM
    from llmlab.registry import resolve

    model, tokenizer = llmlab.load(args.model)
    prompts = chat_prompts(tokenizer, args.batch)
    results = {"model": args.model, "tokens": args.tokens, "batch": args.batch, "threads": torch.get_num_threads()}
    llm = LLM(model, tokenizer, kv_memory="256MiB")
    results["engine_single"] = engine_tokens_per_second(llm, prompts[:1], args.tokens)
    results["engine_batch"] = engine_tokens_per_second(llm, prompts, args.tokens)
    if not args.skip_hf:
        hf = hf_model_from(model)
        hf_tokens_per_second(hf, tokenizer, prompts[:1], 2)  # warm-up
        results["hf_single"] = hf_tokens_per_second(hf, tokenizer, prompts[:1], args.tokens)
        results["hf_batch"] = hf_tokens_per_second(hf, tokenizer, prompts, args.tokens)
        del hf
    if args.profile:
        profile_decode(llm, prompts[:1], args.tokens)
    del llm, model
    for quant in ("int8", "int4"):
        qllm = LLM(args.model, quant=quant, kv_memory="256MiB")
        results[f"engine_{quant}_single"] = engine_tokens_per_second(qllm, prompts[:1], args.tokens)
        del qllm
    path = resolve(args.model)
    results["llama_cpp_single"] = (llama_cpp_tokens_per_second(path, tokenizer.decode(prompts[0]), args.tokens)
                                   if path.suffix == ".gguf" else None)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def profile_decode(llm, prompts, tokens: int):
    from torch.profiler import ProfilerActivity, profile

    from llmlab.engine import SamplingParams

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        llm.generate(prompts, SamplingParams(max_tokens=tokens, ignore_eos=True), progress=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def report(r: dict):
    from rich.console import Console
    from rich.table import Table

    def fmt(x):
        return "—" if x is None else f"{x:.1f}"

    def ratio(a, b):
        return "—" if a is None or b is None else f"{a / b:.2f}×"

    table = Table(title=f"{r['model']}: {r['tokens']} new tokens, greedy, {r['threads']} threads")
    for column in ("row", "ours tok/s", "peer", "peer tok/s", "ratio", "target"):
        table.add_column(column)
    table.add_row("single stream fp32", fmt(r["engine_single"]), "HF generate", fmt(r.get("hf_single")),
                  ratio(r["engine_single"], r.get("hf_single")), "≥ 2×")
    table.add_row(f"{r['batch']} concurrent fp32", fmt(r["engine_batch"]), f"HF generate batch {r['batch']}",
                  fmt(r.get("hf_batch")), ratio(r["engine_batch"], r.get("hf_batch")), "≥ 3×")
    cpp = r["llama_cpp_single"]
    for quant in ("int4", "int8"):
        table.add_row(f"single stream {quant}", fmt(r[f"engine_{quant}_single"]),
                      "llama.cpp Q4_1" if cpp is not None else "llama.cpp (llama-cpp-python not installed)",
                      fmt(cpp), ratio(r[f"engine_{quant}_single"], cpp), "≥ 1× (int4)" if quant == "int4" else "")
    Console().print(table)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
