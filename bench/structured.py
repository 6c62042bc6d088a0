"""Constrained decoding cost: decode tokens/s with and without a JSON Schema, in one run.

    .venv/bin/python bench/structured.py                    # SmolLM2-135M-Instruct, 64 tokens
    .venv/bin/python bench/structured.py --tokens 96 --batch 16 --repeats 3 --threads 2 --json out.json

Same engine, same chat prompts, greedy. The free run ignores EOS; the constrained run's schema (an
array of at least 1000 person objects: strings, integers, enums, keys) cannot finish early, so
both make exactly --tokens new tokens per request. Rows: one request (single stream) and --batch
concurrent requests; each alternates free and constrained --repeats times and keeps the best of
each. Reported: tokens/s of both, the slowdown by wall clock and by process CPU time (the one to
read on a busy machine, where wall time mostly measures the neighbours), and the mask time per constrained token (CPU time
of llguidance filling the bitmask, in the worker thread that overlaps the model's forward pass),
plus the one-off costs: the tokenizer bridge and the schema compile. The load average at the start
is printed: on a shared machine, read the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import time

import torch

QUESTIONS = [
    "List some people as JSON.",
    "Give me a JSON array of made-up people.",
    "Describe a few friends in JSON.",
    "Invent a team and write it as JSON.",
]

SCHEMA = {
    "type": "array",
    "minItems": 1000,  # never satisfied within --tokens: the constrained run cannot stop early
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["engineer", "artist", "doctor", "teacher"]},
            "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
        },
        "required": ["name", "age", "role"],
        "additionalProperties": False,
    },
}


def prompts(tokenizer, n: int) -> list[list[int]]:
    from llmlab.tokenize.tokenizer import apply_chat

    return [
        apply_chat(tokenizer, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
        for i in range(n)
    ]


def run(llm, batch, params) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds — all threads, the mask worker's included, tokens)."""
    start, cpu = time.perf_counter(), time.process_time()
    outs = llm.generate(batch, params, progress=False)
    tokens = sum(len(o.token_ids) for o in outs)
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def print(*args, **kwargs):  # noqa: A001 - unbuffered, so a long run shows progress in a log
    builtins.print(*args, **kwargs, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from llmlab.engine import LLM, SamplingParams

    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    llm = LLM(args.model, kv_memory="256MiB", max_num_seqs=max(16, args.batch))
    guide = llm.engine.guide
    started = time.perf_counter()
    guide.lltokenizer()
    bridge = time.perf_counter() - started
    constrained = SamplingParams(max_tokens=args.tokens, json_schema=SCHEMA)
    started = time.perf_counter()
    guide.check(constrained)
    compile_s = time.perf_counter() - started
    free = SamplingParams(max_tokens=args.tokens, ignore_eos=True)
    print(
        f"one-off: tokenizer bridge {bridge:.2f} s, schema compile {compile_s * 1e3:.1f} ms "
        f"(cached afterwards)"
    )
    sample = llm.generate(prompts(llm.tokenizer, 1), constrained, progress=False)[0].text
    print(f"constrained output starts: {sample[:90]!r}")
    results = {"load_average_at_start": os.getloadavg()[0], "rows": []}
    header = (
        f"{'row':<16}{'free tok/s':>12}{'guided tok/s':>14}{'slowdown':>10}{'CPU slowdown':>14}"
        f"{'mask µs/tok':>13}"
    )
    print(header)
    for name, n in (("single stream", 1), (f"{args.batch} concurrent", args.batch)):
        batch = prompts(llm.tokenizer, n)
        best_free = best_guided = cpu_free = cpu_guided = float("inf")
        masks_s = masks = 0
        run(llm, batch, free)  # warm-up
        for _ in range(args.repeats):
            t, cpu, tokens_free = run(llm, batch, free)
            best_free, cpu_free = min(best_free, t), min(cpu_free, cpu)
            before_s, before_n = guide.mask_seconds, guide.mask_rows
            t, cpu, tokens_guided = run(llm, batch, constrained)
            best_guided, cpu_guided = min(best_guided, t), min(cpu_guided, cpu)
            masks_s += guide.mask_seconds - before_s
            masks += guide.mask_rows - before_n
        assert tokens_free == tokens_guided == n * args.tokens, (tokens_free, tokens_guided)
        free_tps, guided_tps = tokens_free / best_free, tokens_guided / best_guided
        slowdown, cpu_slowdown = best_guided / best_free - 1, cpu_guided / cpu_free - 1
        mask_us = masks_s / max(masks, 1) * 1e6
        print(
            f"{name:<16}{free_tps:>12.1f}{guided_tps:>14.1f}{slowdown:>9.1%}{cpu_slowdown:>13.1%}"
            f"{mask_us:>13.1f}"
        )
        results["rows"].append(
            {
                "row": name,
                "batch": n,
                "free_tokens_per_s": free_tps,
                "guided_tokens_per_s": guided_tps,
                "slowdown": slowdown,
                "cpu_slowdown": cpu_slowdown,
                "mask_us_per_token": mask_us,
            }
        )
    results.update(
        tokens=args.tokens,
        threads=torch.get_num_threads(),
        bridge_s=bridge,
        compile_ms=compile_s * 1e3,
        load_average_at_end=os.getloadavg()[0],
    )
    print(f"load average at end: {results['load_average_at_end']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
