"""`llmlab exp`: the foundations lab — experiments that test the notes' claims.

    llmlab exp list                          # names, titles and the claims they test
    llmlab exp run vanishing-gradients       # one experiment → runs/lab/vanishing-gradients/
    llmlab exp run --all [--fast] [--out DIR]  # --fast: tiny sizes, verdicts indicative only,
                                               # written to DIR/fast/ (full results stay)
    llmlab exp docs [--results DIR]          # regenerate docs/lab.md (+ docs/lab/*.png) from results

Each run writes result.json, plot.png and report.md (claim in Chinese with an English gloss, the
measured numbers, and a held / did-not-hold verdict computed from them).
"""

from __future__ import annotations

import argparse

DEFAULT_OUT = "runs/lab"


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    parser = subparsers.add_parser(
        "exp",
        help="foundations lab: run experiments that test the notes' claims",
        parents=[common_parser()],
    )
    sub = parser.add_subparsers(dest="exp_command", metavar="{list,run,docs}")
    sub.required = True
    p_list = sub.add_parser("list", help="list experiments", parents=[common_parser()])
    p_list.set_defaults(func=_list)
    p_run = sub.add_parser("run", help="run one experiment or all", parents=[common_parser()])
    p_run.add_argument("name", nargs="?", help="experiment name (see `llmlab exp list`)")
    p_run.add_argument("--all", action="store_true", help="run every experiment")
    p_run.add_argument(
        "--fast",
        action="store_true",
        help="tiny sizes (seconds each; verdicts indicative only), results in OUT/fast/",
    )
    p_run.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p_run.set_defaults(func=_run)
    p_docs = sub.add_parser(
        "docs", help="write docs/lab.md and docs/lab/*.png from results", parents=[common_parser()]
    )
    p_docs.add_argument(
        "--results", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})"
    )
    p_docs.add_argument(
        "--doc", default="docs/lab.md", help="Markdown file to write (default docs/lab.md)"
    )
    p_docs.set_defaults(func=_docs)


def _list(args: argparse.Namespace) -> int:
    from llmlab.exp import registry

    for name in registry.EXPERIMENTS:
        try:
            module = registry.load(name)
        except registry.ExperimentUnavailable as exc:  # a subsystem it builds on is missing
            print(f"{name:30s} (unavailable: {exc})")
            continue
        print(f"{name:30s} {module.TITLE}\n{'':30s} §{module.CLAIM.section}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from llmlab.errors import LlmlabError
    from llmlab.exp import registry
    from llmlab.exp.report import write_summary
    from llmlab.exp.runner import FAST_NOTE, results_dir, run_experiment, verdict_label

    if bool(args.name) == bool(args.all):
        raise LlmlabError("give an experiment name or --all (see `llmlab exp list`)")
    names = registry.available() if args.all else [args.name]
    out = results_dir(args.out, args.fast)
    console = Console()
    if args.fast:
        console.print(
            f"{FAST_NOTE}; results go to {out}/ (full-mode results stay untouched)", soft_wrap=True
        )
    results = []
    for i, name in enumerate(names, 1):
        with console.status(f"[{i}/{len(names)}] {name}{' (fast)' if args.fast else ''} …"):
            result = run_experiment(name, args.out, fast=args.fast)
        results.append(result)
        held = sum(c["held"] for c in result["checks"])
        color = "green" if result["verdict"] == "held" else "red"
        console.print(
            f"[{color}]{verdict_label(result):>12}[/] {name}  ({held}/{len(result['checks'])} "
            f"checks, {result['timings']['total_seconds']:.1f} s) → {out / name / 'report.md'}",
            soft_wrap=True,  # one line per experiment, also in a pipe or a log
        )
    if args.all:
        path = write_summary(out)
        total = sum(r["timings"]["total_seconds"] for r in results)
        held = sum(r["verdict"] == "held" for r in results)
        mode = f" ({FAST_NOTE})" if args.fast else ""
        console.print(
            f"all {len(results)} experiments in {total:.0f} s: {held} held{mode}; summary: {path}",
            soft_wrap=True,
        )
    return 0


def _docs(args: argparse.Namespace) -> int:
    from llmlab.exp.report import write_docs

    print(write_docs(args.results, args.doc))
    return 0
