"""`llmlab reason`: score reasoning methods (greedy, CoT, CoT + self-consistency, PoT, PoT-SC) on word problems.

    llmlab reason --method greedy,cot,pot --problems bundled:arith-word-test.jsonl --limit 50
    llmlab reason --method cot-sc,pot-sc --n 8 --limit 50 --out runs/reason/sc.json
    llmlab reason --method pot --search-prompts --dev bundled:arith-word-dev.jsonl --dev-limit 30
    llmlab reason --method pot --prompt pot-example --show 3     # print three worked samples
    llmlab reason --method pot --adapter runs/sft-pot-smollm2/adapter --limit 30   # after PoT SFT

    # PoT training data: n programs per train problem, kept when the sandbox prints the answer
    llmlab reason --build-pot-data runs/pot/verified.jsonl --problems bundled:arith-word-train.jsonl \
        --limit 200 --n 8 --shots pot-shots-simple
    llmlab reason --teacher runs/pot/teacher.jsonl --problems bundled:arith-word-train.jsonl

One model load for all methods; a table of accuracy and cost (prompt tokens — counted once per
problem since the n samples share its KV blocks —, generated tokens, seconds) and, with --out, the
JSON with every problem's samples and votes (written to a temporary file, then renamed). PoT
programs run in llmlab.agents.sandbox, never in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from llmlab.commands.common import non_negative_float, non_negative_int, positive_int


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    p = subparsers.add_parser(
        "reason",
        parents=[common_parser()],
        help="CoT / PoT / self-consistency on word problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", default="cot", help="greedy|cot|cot-sc|pot|pot-sc (comma-separated)")
    p.add_argument("--n", type=positive_int, default=8, help="samples per problem for -sc methods")
    p.add_argument(
        "--problems", default="bundled:arith-word-test.jsonl", help="jsonl or bundled:NAME"
    )
    p.add_argument(
        "--limit", type=non_negative_int, default=0, help="first N problems only (0 = all)"
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--adapter", default="", help="a PEFT LoRA adapter folder to apply")
    p.add_argument(
        "--prompt", default="", help="prompt name under llmlab/prompts/reason/ or a YAML file"
    )
    p.add_argument("--temperature", type=non_negative_float, default=0.7, help="for -sc sampling")
    p.add_argument(
        "--max-tokens", type=non_negative_int, default=0, help="per sample (0 = per-method default)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search-prompts", action="store_true", help="pick the best prompt on --dev")
    p.add_argument("--dev", default="bundled:arith-word-dev.jsonl")
    p.add_argument("--dev-limit", type=positive_int, default=30)
    p.add_argument(
        "--show", type=non_negative_int, default=0, help="print this many samples per method"
    )
    p.add_argument("--out", default="", help="write the full results as JSON")
    p.add_argument(
        "--build-pot-data",
        default="",
        metavar="OUT",
        help="instead of scoring: rejection-sample PoT programs for --problems into this SFT jsonl",
    )
    p.add_argument(
        "--shots",
        default="pot-shots",
        help="worked programs shown before each problem when building PoT data ('' for none)",
    )
    p.add_argument(
        "--teacher",
        default="",
        metavar="OUT",
        help="write the generator's own programs for --problems here (a labelled teacher set; "
        "no sampling unless --build-pot-data is given too)",
    )
    p.set_defaults(func=run_reason)


def _load(args):
    """The engine on the model, with the PEFT adapter (e.g. a PoT SFT run's) merged into it."""
    from llmlab.engine import LLM

    return LLM(args.model, adapters=[args.adapter] if args.adapter else ())


def run_reason(args) -> int:
    from llmlab.agents.reasoning import METHODS, read_problems, search_prompts, solve
    from llmlab.errors import LlmlabError

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise LlmlabError(f"unknown method '{m}' (choose {', '.join(METHODS)})")
    if args.n < 1 or args.limit < 0:
        raise LlmlabError("--n must be >= 1 and --limit >= 0")
    problems = read_problems(args.problems)
    problems = problems[: args.limit] if args.limit else problems
    if args.build_pot_data or args.teacher:
        return _build_pot_data(args, problems)
    dev = read_problems(args.dev)[: args.dev_limit] if args.search_prompts else []
    llm = _load(args)
    options = {
        "temperature": args.temperature,
        "max_tokens": args.max_tokens or None,
        "seed": args.seed,
    }
    report = {
        "model": args.model,
        "adapter": args.adapter,
        "problems": args.problems,
        "count": len(problems),
        "load": _load_average(),
        "results": [],
    }
    for method in methods:
        if args.search_prompts:
            found = search_prompts(llm, dev, problems, method, args.n, **options)
            report["results"].append(found)
            for row in found["dev"]:
                print(f"dev   {method:7} {row['prompt']:16} acc {row['accuracy']:.3f}")
            summary = found["test"]
            print(
                f"test  {method:7} {found['best']:16} acc {summary['accuracy']:.3f} (best on dev)"
            )
            continue
        result = solve(llm, problems, method, args.n, prompt=args.prompt or None, **options)
        report["results"].append({**result.summary(), "rows": result.rows})
        s = result.summary()
        print(
            f"{method:7} prompt={s['prompt']:14} acc {s['accuracy']:.3f} ({s['correct']}/{s['total']})"
            f"  prompt tok {s['prompt_tokens']}  gen tok {s['completion_tokens']}"
            f"  {s['seconds']:.1f} s ({s['sandbox_seconds']:.1f} s sandbox)"
        )
        for row in result.rows[: args.show]:
            print(
                f"  Q: {row['question']}\n  A: {row['sample'].strip()}\n  -> {row['predicted']} "
                f"(gold {row['answer']}, votes {row['votes']})"
            )
    report["load_after"] = _load_average()
    if args.out:
        tmp = args.out + ".partial"
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, ensure_ascii=False)
        os.replace(tmp, args.out)
    return 0


def _build_pot_data(args, problems) -> int:
    """--build-pot-data: the model's verified programs; --teacher: the generator's (no sampling)."""
    from llmlab.agents.pot_data import build_pot_data, teacher_rows, write_rows

    stats = {}
    if args.teacher:
        rows = teacher_rows(problems, prompt=args.prompt or "pot")
        write_rows(args.teacher, rows)
        stats["teacher"] = {"programs": len(rows), "source": "teacher", "out": args.teacher}
        print(f"wrote {len(rows)} teacher programs -> {args.teacher}", file=sys.stderr)
    if args.build_pot_data:
        stats.update(
            build_pot_data(
                args.model,
                problems,
                args.build_pot_data,
                n=args.n,
                prompt=args.prompt or "pot",
                shots=args.shots or None,
                temperature=args.temperature,
                max_new_tokens=args.max_tokens or 96,
                seed=args.seed,
                adapter=args.adapter,
            )
        )
        print(
            f"kept {stats['programs_kept']} verified programs for {stats['problems_solved']} of "
            f"{stats['problems']} problems ({stats['samples']} samples) -> {args.build_pot_data}",
            file=sys.stderr,
        )
    stats["load"] = _load_average()
    print(json.dumps(stats, indent=1))
    return 0


def _load_average() -> list[float]:
    """The machine's load when the numbers were taken (it is shared)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
