"""Serving engine vs Hugging Face `generate()` (and llama.cpp when installed), one run, same model.

    .venv/bin/python bench/engine.py                      # SmolLM2-135M-Instruct, 64 new tokens
    .venv/bin/python bench/engine.py --tokens 32 --batch 16 --json out.json
    .venv/bin/python bench/engine.py --model gemma3-270m --tokens 32 --quant-rows int4

Greedy decoding, fp32, the same chat prompts for everyone, EOS ignored so every run makes exactly
--tokens new tokens; no prompt K/V is reused between runs (our prefix cache is off, llama.cpp is
reset), and each row alternates ours and the peer --repeats times and keeps the best of each.
Rows: single-stream tokens/s (one request), aggregate tokens/s with --batch concurrent requests
(HF: one padded batch), the same two with our engine in bfloat16 (a speed lever, beside HF fp32),
and our int8/int4 single stream (int4 also with the engine's --compile) beside llama.cpp on the Q4_1 GGUF via
`llama-cpp-python` with the same thread count (reported as missing when it is not installed).
Ratios are given by wall clock and by process CPU time (the latter is what to read on a shared
machine with --threads 1). --profile adds a torch profiler table of one engine decode run.

    .venv/bin/python bench/engine.py --ceiling            # memory-bandwidth ceiling, 1 and 2 threads

--ceiling measures what the hardware allows a float32 single stream: read bandwidth (sum over a
500 MB tensor), copy bandwidth, and the time of one token's weight matmuls alone (SmolLM2-135M
shapes, 538 MB of float32 weights, cold in cache) in Hugging Face's layout ([out, in], one matmul
per projection) and in the engine's packed layout (transposed, q/k/v and gate/up fused).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

QUESTIONS = [
    "What is dropout?",
    "Explain residual connections in two sentences.",
    "Name three sorting algorithms.",
    "Why do transformers use layer normalization?",
    "What is the capital of France?",
    "Write a haiku about GPUs.",
    "How does attention work?",
    "What is overfitting?",
]


# (row name, quantization, the engine's --compile: torch.compile of single-stream decode)
QUANT_ROWS = (("int4", "int4", False), ("int4+compile", "int4", True), ("int8", "int8", False))


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    from llmlab.tokenize.tokenizer import apply_chat

    return [
        apply_chat(tokenizer, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for i in range(n)
    ]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class Rate:
    """Best tokens/s over repeated runs, by wall clock and by this process's CPU time. On a shared
    machine the CPU-time rate is the one that does not depend on what the other jobs do (with one
    thread it is the speed on an idle core; with more, spin-waiting threads count too)."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.tokens: list[int] = []

    def measure(self, fn):  # fn() → (tokens made, tokens of the first sequence)
        wall, cpu = time.perf_counter(), time.process_time()
        made, tokens = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.wall, self.cpu = max(self.wall, made / wall), max(self.cpu, made / max(cpu, 1e-9))
        self.tokens = tokens


def hf_model_from(model):
    import transformers

    config = transformers.AutoConfig.for_model(**model.config.to_hf())
    hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    hf.load_state_dict(model.state_dict(), strict=False)
    hf.tie_weights()
    return hf


def hf_run(hf, tokenizer, prompts, tokens: int):
    """Greedy HF generate() of exactly `tokens` new tokens per prompt (left-padded batch) → (tokens made, first row)."""
    longest = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    return (out.shape[1] - longest) * len(prompts), out[0, longest:].tolist()


def engine_run(llm, prompts, tokens: int):
    """Our engine, greedy, EOS ignored → (tokens made, first prompt's tokens)."""
    from llmlab.engine import SamplingParams

    outs = llm.generate(prompts, SamplingParams(max_tokens=tokens, ignore_eos=True), progress=False)
    return sum(len(o.token_ids) for o in outs), outs[0].token_ids


def llama_cpp_runner(path):
    """llama.cpp on the same GGUF, same thread count, greedy (top-k 1): a function (prompt ids,
    tokens) → (tokens made, tokens), or None when llama-cpp-python is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    threads = torch.get_num_threads()
    llm = Llama(
        model_path=str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False
    )

    def run(
        prompt_ids: list[int], tokens: int
    ):  # the low-level generator never stops at EOS, like ignore_eos
        llm.reset()  # no reuse of the previous run's prompt K/V (our engine runs without prefix caching too)
        made = []
        for token in llm.generate(
            prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0
        ):
            made.append(token)
            if len(made) == tokens:
                break
        return len(made), made

    run.close = llm.close
    return run


def alternate(runs: dict, tokens: int, repeats: int) -> dict:
    """Warm each runner up (2 tokens), then run them in turn `repeats` times; best Rate of each."""
    rates = {name: Rate() for name in runs}
    for fn in runs.values():
        fn(2)
    for _ in range(repeats):
        for name, fn in runs.items():
            rates[name].measure(lambda fn=fn: fn(tokens))
    return rates


def check_same_tokens(row: str, ours: list[int], theirs: list[int]) -> None:
    """fp32 engine and HF `generate`, both greedy on the same weights, must produce the same
    tokens (the first sequence of the row); otherwise the bench stops before printing speeds."""
    same = _common_prefix(list(ours), list(theirs))
    if same < max(len(ours), len(theirs)):
        raise SystemExit(
            f"error: {row} row: engine and HF greedy tokens differ from position {same} "
            f"(engine {list(ours)[same : same + 4]}…, HF {list(theirs)[same : same + 4]}…)"
        )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _best_seconds(fn, repeats: int) -> float:
    fn()
    return min(timed(fn)[0] for _ in range(repeats))


def ceiling(threads_list=(1, 2)):
    """Print the float32 single-stream ceiling of this machine (see the module docstring)."""
    import torch.nn.functional as F

    hidden, inter, kv, layers, vocab = 576, 1536, 192, 30, 49152  # SmolLM2-135M
    big = torch.randn(125_000_000)  # 500 MB
    copy = torch.empty_like(big)
    separate = [
        [
            torch.randn(n, k)
            for n, k in (
                (hidden, hidden),
                (kv, hidden),
                (kv, hidden),
                (hidden, hidden),
                (inter, hidden),
                (inter, hidden),
                (hidden, inter),
            )
        ]
        for _ in range(layers)
    ]
    packed = [
        [
            torch.randn(k, n)
            for k, n in (
                (hidden, hidden + 2 * kv),
                (hidden, hidden),
                (hidden, 2 * inter),
                (inter, hidden),
            )
        ]
        for _ in range(layers)
    ]
    head = torch.randn(vocab, hidden)
    head_t = head.t().contiguous()
    weight_bytes = 4 * (sum(w.numel() for layer in separate for w in layer) + head.numel())
    xs = {hidden: torch.randn(1, hidden), inter: torch.randn(1, inter)}

    def hf_layout():
        for layer in separate:
            for w in layer:
                F.linear(xs[w.shape[1]], w)
        F.linear(xs[hidden], head)

    def packed_layout():
        for layer in packed:
            for w in layer:
                torch.mm(xs[w.shape[0]], w)
        torch.mm(xs[hidden], head_t)

    print(f"one token's float32 weights: {weight_bytes / 1e6:.0f} MB")
    for threads in threads_list:
        torch.set_num_threads(threads)
        read = _best_seconds(big.sum, 5)
        copied = _best_seconds(lambda: copy.copy_(big), 5)
        hf = _best_seconds(hf_layout, 8)
        ours = _best_seconds(packed_layout, 8)
        print(
            f"{threads} thread(s): read {big.numel() * 4 / read / 1e9:.1f} GB/s, copy (read+write) "
            f"{2 * big.numel() * 4 / copied / 1e9:.1f} GB/s → at most {big.numel() * 4 / read / weight_bytes:.1f} tok/s; "
            f"weight matmuls alone: HF layout {hf * 1e3:.1f} ms ({1 / hf:.1f} tok/s), packed "
            f"{ours * 1e3:.1f} ms ({1 / ours:.1f} tok/s, {weight_bytes / ours / 1e9:.1f} GB/s)"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument(
        "--batch", type=int, default=16, help="concurrent requests for the aggregate row"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for every row (default: torch's)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per row; the best counts"
    )
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument(
        "--quant-rows",
        default=",".join(name for name, _, _ in QUANT_ROWS),
        help="which quantized single-stream rows to run (comma-separated; default all)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print where an engine decode step spends its time"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--ceiling", action="store_true", help="only measure the memory-bandwidth ceiling"
    )
    args = parser.parse_args()
    if args.ceiling:
        return ceiling((args.threads,) if args.threads else (1, 2))
    if args.threads:
        torch.set_num_threads(args.threads)

    import llmlab
    from llmlab.engine import LLM
    from llmlab.registry import resolve

    model, tokenizer = llmlab.load(args.model)
    prompts = chat_prompts(tokenizer, args.batch)
    results = {
        "model": args.model,
        "tokens": args.tokens,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
    }
    llm = LLM(model, tokenizer, kv_memory="256MiB", enable_prefix_caching=False)
    hf = None if args.skip_hf else hf_model_from(model)
    for row, group in (("single", prompts[:1]), ("batch", prompts)):
        runs = {"engine": lambda n, g=group, e=llm: engine_run(e, g, n)}
        if hf is not None:
            runs["hf"] = lambda n, g=group, h=hf: hf_run(h, tokenizer, g, n)
        rates = alternate(runs, args.tokens, args.repeats)
        for name, rate in rates.items():
            results[f"{name}_{row}"], results[f"{name}_{row}_cpu"] = rate.wall, rate.cpu
        if hf is not None:  # speed must not come from different math: same greedy tokens
            check_same_tokens(row, rates["engine"].tokens, rates["hf"].tokens)
    if args.profile:
        profile_decode(llm, prompts[:1], args.tokens)
    del llm, model, hf
    # The bfloat16 speed lever (not the fp32 comparison the targets name): ours only, beside HF fp32.
    bllm = LLM(args.model, dtype="bfloat16", kv_memory="256MiB", enable_prefix_caching=False)
    for row, group in (("single", prompts[:1]), ("batch", prompts)):
        rate = alternate(
            {"engine": lambda n, g=group, e=bllm: engine_run(e, g, n)}, args.tokens, args.repeats
        )["engine"]
        results[f"engine_bf16_{row}"], results[f"engine_bf16_{row}_cpu"] = rate.wall, rate.cpu
    del bllm
    path = resolve(args.model)
    cpp = llama_cpp_runner(path) if path.suffix == ".gguf" else None
    wanted = set(args.quant_rows.split(",")) - {""}
    unknown = wanted - {name for name, _, _ in QUANT_ROWS}
    if unknown:
        raise SystemExit(f"error: unknown --quant-rows {', '.join(sorted(unknown))}")
    for (
        quant,
        kind,
        compiled,
    ) in [row for row in QUANT_ROWS if row[0] in wanted]:  # compiling: a minute, before timing
        qllm = LLM(
            args.model,
            quant=kind,
            kv_memory="256MiB",
            enable_prefix_caching=False,
            compile=compiled,
        )
        runs = {"engine": lambda n, q=qllm: engine_run(q, prompts[:1], n)}
        if cpp is not None:
            runs["llama_cpp"] = lambda n: cpp(prompts[0], n)
        rates = alternate(runs, args.tokens, args.repeats)
        results[f"engine_{quant}_single"], results[f"engine_{quant}_single_cpu"] = (
            rates["engine"].wall,
            rates["engine"].cpu,
        )
        if cpp is not None:
            cpp_rate = rates["llama_cpp"]
            results[f"llama_cpp_single_vs_{quant}"], results[f"llama_cpp_single_vs_{quant}_cpu"] = (
                cpp_rate.wall,
                cpp_rate.cpu,
            )
            if quant == "int4":  # same Q4_1 weights: how long do the greedy continuations agree?
                results["llama_cpp_same_leading_tokens"] = _common_prefix(
                    cpp_rate.tokens, rates["engine"].tokens
                )
        del qllm
    results["llama_cpp_installed"] = cpp is not None
    if cpp is not None:
        cpp.close()  # free llama.cpp's model now, not in an interpreter-exit destructor
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

    table = Table(
        title=f"{r['model']}: {r['tokens']} new tokens, greedy, {r['threads']} threads, "
        f"best of {r['repeats']} alternating runs"
    )
    for column in (
        "row",
        "ours tok/s",
        "peer",
        "peer tok/s",
        "ratio",
        "ratio by CPU time",
        "target",
    ):
        table.add_column(column)
    for row, peer, target in (
        ("single", "HF generate", "≥ 2×"),
        ("batch", f"HF generate batch {r['batch']}", "≥ 3×"),
    ):
        label = "single stream fp32" if row == "single" else f"{r['batch']} concurrent fp32"
        table.add_row(
            label,
            fmt(r[f"engine_{row}"]),
            peer,
            fmt(r.get(f"hf_{row}")),
            ratio(r[f"engine_{row}"], r.get(f"hf_{row}")),
            ratio(r[f"engine_{row}_cpu"], r.get(f"hf_{row}_cpu")),
            target,
        )
    for row, peer in (
        ("single", "HF generate fp32"),
        ("batch", f"HF generate fp32 batch {r['batch']}"),
    ):
        label = "single stream bf16" if row == "single" else f"{r['batch']} concurrent bf16"
        table.add_row(
            label,
            fmt(r[f"engine_bf16_{row}"]),
            peer,
            fmt(r.get(f"hf_{row}")),
            ratio(r[f"engine_bf16_{row}"], r.get(f"hf_{row}")),
            ratio(r[f"engine_bf16_{row}_cpu"], r.get(f"hf_{row}_cpu")),
            "(lever, not the fp32 target)",
        )
    for quant, kind, _ in QUANT_ROWS:
        if f"engine_{quant}_single" not in r:
            continue  # not asked for (--quant-rows)
        cpp = r.get(f"llama_cpp_single_vs_{quant}")
        peer = (
            "llama.cpp, same GGUF"
            if r["llama_cpp_installed"]
            else "llama.cpp: llama-cpp-python not installed"
        )
        table.add_row(
            f"single stream {quant}",
            fmt(r[f"engine_{quant}_single"]),
            peer,
            fmt(cpp),
            ratio(r[f"engine_{quant}_single"], cpp),
            ratio(r[f"engine_{quant}_single_cpu"], r.get(f"llama_cpp_single_vs_{quant}_cpu")),
            "≥ 1×" if kind == "int4" else "",
        )
    Console().print(table)
    if r["load_average_at_start"] > r["cpus"] / 2:
        print(
            f"note: load average {r['load_average_at_start']:.1f} on {r['cpus']} CPUs at the start — other jobs "
            "share the cores; with more threads than free cores every row slows down unevenly"
        )
    if "llama_cpp_same_leading_tokens" in r:
        print(
            f"llama.cpp and our int4 engine agree on the first {r['llama_cpp_same_leading_tokens']} greedy tokens "
            "(same Q4_1 weights; llama.cpp also rounds activations to 8 bits and the KV cache to fp16)"
        )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
