"""Serving engine vs Hugging Face `generate()` (and llama.cpp when installed), one run, same model.

    .venv/bin/python bench/engine.py                      # SmolLM2-135M-Instruct, 64 new tokens
    .venv/bin/python bench/engine.py --tokens 32 --batch 16 --json out.json
    .venv/bin/python bench/engine.py --model gemma3-270m --tokens 32 --quant-rows int4

Greedy decoding, the same chat prompts for everyone (the question/answer frame for a base model),
EOS ignored so every run makes exactly --tokens new tokens; no prompt K/V is reused between runs
(our prefix cache is off, llama.cpp's KV cache is cleared), every rate includes the prompts'
prefill on both sides, and each row alternates ours and the peer --repeats times and keeps the best
of each. Rows, each single stream (one request) and --batch concurrent requests:

  fp32   ours vs HF `generate` fp32 (one left-padded batch); the bench stops unless both produce
         the same greedy tokens
  bf16   ours vs native llama.cpp on a BF16 GGUF of the same weights (made once from the packaged
         GGUF by llama.cpp's own `llama_model_quantize`, cached under --work); HF fp32 beside it
         as a lever ratio
  int4   ours (GGUF Q4_1 codes for SmolLM2; requantized to group-32 int4 for Gemma, whose file is
         Q4_K_M) vs llama.cpp on the packaged GGUF itself
  int8, w8a8   ours vs llama.cpp on a Q8_0 GGUF (llama.cpp quantizes activations to 8 bits too)
int4 and w8a8 single streams run the engine's native decode layer (engine/native_decode.py), which
`--compile` leaves as it is, so there are no compiled rows.

llama.cpp runs through its C API (bench/_llamacpp.py: one llama_batch per step with a token of every
sequence, llama_decode, argmax) with the same thread count for n_threads and n_threads_batch; its
rows read "not installed" without llama-cpp-python (`make bench-peers`). The common prefix of our
and llama.cpp's greedy tokens (first sequence) is printed per row. Ratios are given by wall clock
and by process CPU time (the latter is what to read on a shared machine with --threads 1).
--profile adds a torch profiler table of one engine decode run.

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
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # bench/_llamacpp.py

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


# (row name = quantization, its llama.cpp peer: "native" = the packaged GGUF itself, else the
# format llama.cpp converts it to)
QUANT_ROWS = (("int4", "native"), ("int8", "q8_0"), ("w8a8", "q8_0"))


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
        "--threads",
        type=int,
        default=None,
        help="threads for every row, both sides (default: torch's)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per row; the best counts"
    )
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument(
        "--quant-rows",
        default=",".join(q for q, _ in QUANT_ROWS),
        help="which quantized rows to run (comma-separated; default all)",
    )
    parser.add_argument(
        "--no-llama-cpp", action="store_true", help="leave llama.cpp out even when installed"
    )
    parser.add_argument(
        "--work",
        default=os.path.expanduser("~/.cache/llmlab/bench"),
        help="where llama.cpp's converted GGUFs (BF16, Q8_0) are kept between runs",
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
    wanted = set(args.quant_rows.split(",")) - {""}
    unknown = wanted - {q for q, _ in QUANT_ROWS}
    if unknown:
        raise SystemExit(f"error: unknown --quant-rows {', '.join(sorted(unknown))}")

    import llmlab
    from llmlab.engine import LLM
    from llmlab.registry import resolve

    model, tokenizer = llmlab.load(args.model)
    prompts = chat_prompts(tokenizer, args.batch)
    groups = {"single": prompts[:1], "batch": prompts}
    results = {
        "model": args.model,
        "tokens": args.tokens,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
    }
    peers = LlamaCppPeers(
        None if args.no_llama_cpp else resolve(args.model),
        Path(args.work),
        torch.get_num_threads(),
        args.batch,
        max(len(p) for p in prompts) + args.tokens,
    )
    results["llama_cpp"] = peers.describe()

    def measure(tag: str, ours, peer_name: str | None, peer_runs):
        """Alternate our engine `ours` with a peer (HF or llama.cpp) in each mode; store rates."""
        for mode in ("single", "batch"):
            runs = {"engine": lambda n, g=groups[mode]: engine_run(ours, g, n)}
            if peer_runs is not None:
                runs[peer_name] = lambda n, g=groups[mode]: peer_runs(g, n)
            rates = alternate(runs, args.tokens, args.repeats)
            for name, rate in rates.items():
                key = f"{tag}_{mode}" if name == "engine" else f"{peer_name}_{mode}_vs_{tag}"
                results[key], results[key + "_cpu"] = rate.wall, rate.cpu
                print(  # progress, so a run cut short still says what it measured
                    f"  {key}: {rate.wall:.1f} tok/s ({rate.cpu:.1f} per CPU-s), "
                    f"load average {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
            if peer_runs is None:
                continue
            if peer_name == "hf":  # speed must not come from different math: same greedy tokens
                check_same_tokens(mode, rates["engine"].tokens, rates["hf"].tokens)
            else:
                same = _common_prefix(rates["engine"].tokens, rates[peer_name].tokens)
                results[f"llama_cpp_{mode}_vs_{tag}_same_leading_tokens"] = same
                print(f"  {tag} {mode}: {same} leading tokens as llama.cpp's", file=sys.stderr)

    llm = LLM(model, tokenizer, kv_memory="256MiB", enable_prefix_caching=False)
    hf = None if args.skip_hf else hf_model_from(model)
    hf_runs = None if hf is None else (lambda g, n, h=hf: hf_run(h, tokenizer, g, n))
    measure("engine", llm, "hf", hf_runs)
    if args.profile:
        profile_decode(llm, prompts[:1], args.tokens)
    del llm, model, hf, hf_runs
    if not args.skip_bf16:
        bllm = LLM(args.model, dtype="bfloat16", kv_memory="256MiB", enable_prefix_caching=False)
        measure("engine_bf16", bllm, "llama_cpp", peers.runner("bf16"))
        del bllm
        peers.close()  # one llama.cpp model at a time: Gemma's rows were OOM-killed here
    for quant, peer_format in QUANT_ROWS:
        if quant not in wanted:
            continue
        qllm = LLM(args.model, quant=quant, kv_memory="256MiB", enable_prefix_caching=False)
        measure(f"engine_{quant}", qllm, "llama_cpp", peers.runner(peer_format))
        del qllm
        peers.close()
    peers.close()  # free llama.cpp's models now, not in an interpreter-exit destructor
    results["load_average_at_end"] = os.getloadavg()[0]
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


class LlamaCppPeers:
    """llama.cpp contexts on the packaged GGUF ("native") and on its BF16 / Q8_0 conversions, made
    on first use and kept for the run; `runner(format)` → fn(prompts, tokens) or None when
    llama.cpp is not installed or the model is not a GGUF."""

    def __init__(self, gguf, work: Path, threads: int, n_seq: int, longest: int):
        from _llamacpp import available

        self.gguf = gguf if gguf is not None and gguf.suffix == ".gguf" else None
        self.installed = available()
        self.work, self.threads, self.n_seq = work, threads, n_seq
        self.n_ctx_per_seq = -(-(longest + 8) // 256) * 256
        self.open: dict = {}

    def describe(self) -> dict:
        if self.gguf is None:
            return {"missing": "not a GGUF model (or --no-llama-cpp)"}
        if not self.installed:
            return {"missing": "llama-cpp-python not installed (make bench-peers)"}
        from _llamacpp import amx_build, version

        return {
            "version": version(),
            "gguf": self.gguf.name,
            "threads": self.threads,
            "amx_build": amx_build(),  # then run without extra buffer types: no weight repacking
        }

    def runner(self, fmt: str):
        if self.gguf is None or not self.installed:
            return None
        if fmt not in self.open:
            from _llamacpp import LlamaCpp, convert_gguf

            path = self.gguf
            if fmt != "native":
                path = convert_gguf(
                    self.gguf, self.work / f"{self.gguf.stem}-{fmt}.gguf", fmt, self.threads
                )
            self.open[fmt] = LlamaCpp(path, self.threads, self.n_seq, self.n_ctx_per_seq)
        return self.open[fmt].generate

    def close(self):
        for peer in self.open.values():
            peer.close()
        self.open.clear()


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
    for column in ("row", "ours tok/s", "peer", "peer tok/s", "ratio", "ratio by CPU time"):
        table.add_column(column)
    cpp = r["llama_cpp"]
    cpp_missing = cpp.get("missing")
    batch = f"{r['batch']} concurrent"
    rows = [("fp32", "engine", "hf", "HF generate fp32")]
    rows += [("bf16", "engine_bf16", "llama_cpp", "llama.cpp BF16 GGUF")]
    rows += [("bf16 (lever)", "engine_bf16", "hf@engine", "HF generate fp32")]
    peers = {"native": f"llama.cpp {cpp.get('gguf', '')}", "q8_0": "llama.cpp Q8_0 GGUF"}
    rows += [(q, f"engine_{q}", "llama_cpp", peers[peer]) for q, peer in QUANT_ROWS]
    for label, tag, peer, peer_label in rows:
        for mode in ("single", "batch"):
            if f"{tag}_{mode}" not in r:
                continue  # not run (--quant-rows, --skip-bf16)
            if peer == "hf@engine":  # our bf16 against the fp32 HF run of the first rows
                key = f"hf_{mode}_vs_engine"
            else:
                key = f"{peer}_{mode}_vs_{tag}"
            name = "llama.cpp: —" if peer == "llama_cpp" and cpp_missing else peer_label
            table.add_row(
                f"{'single stream' if mode == 'single' else batch} {label}",
                fmt(r[f"{tag}_{mode}"]),
                name + (f" batch {r['batch']}" if mode == "batch" else ""),
                fmt(r.get(key)),
                ratio(r[f"{tag}_{mode}"], r.get(key)),
                ratio(r[f"{tag}_{mode}_cpu"], r.get(key + "_cpu")),
            )
    Console(width=150).print(table)
    if cpp_missing:
        print(f"llama.cpp: {cpp_missing}")
    print(
        f"load average {r['load_average_at_start']:.2f} at the start, "
        f"{r['load_average_at_end']:.2f} at the end, {r['cpus']} CPUs"
        + (" — other jobs share the cores" if r["load_average_at_start"] > r["cpus"] / 2 else "")
    )
    if not cpp_missing:
        print(
            f"llama.cpp: llama-cpp-python {cpp['version']}, C API, {cpp['threads']} threads, "
            + (
                "AMX build: run without extra buffer types (AMX crashes, llama.cpp #20824), so "
                "without weight repacking"
                if cpp["amx_build"]
                else "weight repacking on"
            )
        )
        agree = {
            k.removeprefix("llama_cpp_").removesuffix("_same_leading_tokens"): v
            for k, v in r.items()
            if k.endswith("_same_leading_tokens")
        }
        print(
            f"greedy tokens shared with llama.cpp from the start (first sequence, of {r['tokens']}): "
            + ", ".join(
                f"{k.replace('_vs_engine', '').replace('_', ' ')} {v}" for k, v in agree.items()
            )
        )
        for line in issue16_targets(r):
            print(line)
    print(json.dumps(r))


def issue16_targets(r: dict) -> list[str]:
    """Issue 16's speed targets: our fastest quantized single stream ≥ 1.25× llama.cpp's single
    stream, our fastest --batch-concurrent row (any precision) ≥ 2× llama.cpp's batched decode —
    llama.cpp on the packaged GGUF (the issue's peer; its best run of this process), with
    llama.cpp's fastest format of this run beside it."""
    lines = []
    tags = ["engine", "engine_bf16", *(f"engine_{q}" for q, _ in QUANT_ROWS)]
    quantized = tags[2:]
    native = [f"engine_{q}" for q, peer in QUANT_ROWS if peer == "native"]
    for mode, ours_from, factor in (("single", quantized, 1.25), ("batch", tags, 2.0)):
        ours = {t: r[f"{t}_{mode}"] for t in ours_from if f"{t}_{mode}" in r}
        every = {t: r[f"llama_cpp_{mode}_vs_{t}"] for t in tags if f"llama_cpp_{mode}_vs_{t}" in r}
        theirs = [v for t, v in every.items() if t in native]
        if not ours or not theirs:
            continue
        best, fastest = max(ours, key=ours.get), max(every, key=every.get)
        got = ours[best] / max(theirs)
        lines.append(
            f"issue 16, {mode}: ours {best.removeprefix('engine_')} {ours[best]:.1f} tok/s vs "
            f"llama.cpp on the packaged GGUF {max(theirs):.1f}: {got:.2f}× (target ≥ "
            f"{factor}×: {'met' if got >= factor else 'not met'}); llama.cpp's fastest format "
            f"here: the {fastest.removeprefix('engine_')} row's peer, {every[fastest]:.1f} tok/s"
        )
    return lines


if __name__ == "__main__":
    main()
