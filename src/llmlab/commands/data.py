"""`llmlab data run|ops|analyze`: run a data recipe, list operators, profile a dataset.

    llmlab data run recipes/notes.yaml [--resume] [--work-dir DIR]
    llmlab data ops
    llmlab data analyze runs/notes/notes-qa.jsonl --out runs/notes/analysis [--fields text answer]
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    data = subparsers.add_parser("data", help="data processing: recipes, operators, analysis", parents=[common_parser()])
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    run = sub.add_parser("run", help="run a YAML recipe (sources → operators → sinks)", parents=[common_parser()])
    run.add_argument("recipe", help="path to the recipe YAML")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run.add_argument("--work-dir", help="override the recipe's work_dir (report, trace, checkpoint)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(func=_run)

    ops = sub.add_parser("ops", help="list every operator with its doc line and arguments", parents=[common_parser()])
    ops.set_defaults(func=_ops)

    analyze = sub.add_parser("analyze", help="per-field statistics, histogram PNGs and a Markdown report", parents=[common_parser()])
    analyze.add_argument("input", help="a .jsonl/.json/.csv/.tsv/.parquet file")
    analyze.add_argument("--out", default=None, help="output folder (default: <input>.analysis)")
    analyze.add_argument("--text-key", default="text", help="field with the main text (gets text statistics)")
    analyze.set_defaults(func=_analyze)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from llmlab.data.executor import run_recipe

    report = run_recipe(args.recipe, resume=args.resume, progress=not args.no_progress, work_dir=args.work_dir)
    console = Console()
    console.print(f"[bold]{report['project']}[/]: read {report['records_read']}, wrote {report['records_written']}, "
                  f"quarantined {report['quarantined']} in {report['seconds']:.1f}s ({report['records_per_second']:.0f} records/s)")  # fmt: skip
    from llmlab.data.recipe import load_recipe

    work_dir = args.work_dir or load_recipe(args.recipe).work_dir
    console.print(f"report: {work_dir}/report.md")
    return 0


def _ops(args: argparse.Namespace) -> int:
    import inspect

    from rich.console import Console
    from rich.table import Table

    from llmlab.data.ops import OPS, op_arguments

    table = Table(title=f"{len(OPS)} data operators")
    for col in ("operator", "kind", "what it does", "arguments"):
        table.add_column(col)
    for name, cls in sorted(OPS.items(), key=lambda kv: (kv[1].kind, kv[0])):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        args_text = ", ".join(k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in op_arguments(cls).items())
        table.add_row(name, cls.kind, doc, args_text or "-")
    Console(width=200).print(table)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from llmlab.data.analyze import analyze

    out = args.out or args.input + ".analysis"
    report = analyze(args.input, out, text_key=args.text_key)
    print(f"analyzed {report['records']} records → {out}/analysis.md")
    return 0
