"""`llmlab data run|ops|analyze|schedule|serve`: run a data recipe, list operators, profile a
dataset, run a recipe on a cron schedule, serve a REST API for recipe runs.

    llmlab data run recipes/notes.yaml [--resume] [--work-dir DIR] [--executor local|ray]
    llmlab data ops
    llmlab data analyze runs/notes/notes-qa.jsonl --out runs/notes/analysis [--fields text answer]
    llmlab data schedule recipes/notes.yaml --cron "0 1 * * *" [--max-runs N] [--run-now]
    llmlab data serve --port 8100 [--state-dir runs/data-api] [--max-concurrent 2] [--api-key KEY] [--root DIR]
"""

from __future__ import annotations

import argparse

from llmlab.commands.common import console, port, positive_int


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    data = subparsers.add_parser(
        "data", help="data processing: recipes, operators, analysis", parents=[common_parser()]
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    run = sub.add_parser(
        "run", help="run a YAML recipe (sources → operators → sinks)", parents=[common_parser()]
    )
    run.add_argument("recipe", help="path to the recipe YAML")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run.add_argument(
        "--work-dir", help="override the recipe's work_dir (report, trace, checkpoint)"
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="override the recipe's executor (ray: pip install 'llmlab[ray]')",
    )
    run.set_defaults(func=_run)

    ops = sub.add_parser(
        "ops", help="list every operator with its doc line and arguments", parents=[common_parser()]
    )
    ops.set_defaults(func=_ops)

    analyze = sub.add_parser(
        "analyze",
        help="per-field statistics, histogram PNGs and a Markdown report",
        parents=[common_parser()],
    )
    analyze.add_argument("input", help="a .jsonl/.json/.csv/.tsv/.parquet file")
    analyze.add_argument("--out", default=None, help="output folder (default: <input>.analysis)")
    analyze.add_argument(
        "--text-key", default="text", help="field with the main text (gets text statistics)"
    )
    analyze.set_defaults(func=_analyze)

    schedule = sub.add_parser(
        "schedule",
        help="run a recipe on a cron schedule, with run history and failure log",
        parents=[common_parser()],
    )
    schedule.add_argument("recipe", help="path to the recipe YAML (re-read before every run)")
    schedule.add_argument(
        "--cron",
        help='cron expression, local time: "MIN HOUR DOM MON DOW" (a 6th field adds seconds)',
    )
    schedule.add_argument(
        "--state-dir",
        help="history.jsonl, failures.jsonl, runs/<id>/ (default: <work_dir>/schedule)",
    )
    schedule.add_argument(
        "--max-runs",
        type=positive_int,
        default=None,
        help="stop after N runs (default: run forever)",
    )
    schedule.add_argument(
        "--run-now", action="store_true", help="run once immediately, then follow the schedule"
    )
    schedule.add_argument(
        "--executor", choices=["local", "ray"], default=None, help="override the recipe's executor"
    )
    schedule.add_argument(
        "--history", action="store_true", help="print the run history of the state folder and exit"
    )
    schedule.set_defaults(func=_schedule)

    serve = sub.add_parser(
        "serve",
        help="REST API: submit recipe runs, poll status, fetch reports",
        parents=[common_parser()],
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=port, default=8100, help="port (default 8100)")
    serve.add_argument(
        "--state-dir",
        default="runs/data-api",
        help="where runs, their status and reports live (default runs/data-api)",
    )
    serve.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=2,
        help="runs executing at once; the rest queue (default 2)",
    )
    serve.add_argument(
        "--max-queued",
        type=positive_int,
        default=64,
        help="queued + running runs before 429 (default 64)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on every route but /health",
    )
    serve.add_argument(
        "--root",
        default=None,
        help="served recipes may only read and write files under this folder (default: the current one)",
    )
    serve.add_argument(
        "--allow-network",
        action="store_true",
        help="let served recipes use database servers and HTTP sources (refused by default)",
    )
    serve.set_defaults(func=_serve)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from llmlab.data.executor import run_recipe

    report = run_recipe(
        args.recipe,
        resume=args.resume,
        progress=not args.no_progress,
        work_dir=args.work_dir,
        executor=args.executor,
    )
    console = Console()
    console.print(f"[bold]{report['project']}[/]: read {report['records_read']}, wrote {report['records_written']}, "
                  f"quarantined {report['quarantined']} in {report['seconds']:.1f}s ({report['records_per_second']:.0f} records/s)")  # fmt: skip
    from llmlab.data.recipe import load_recipe

    work_dir = args.work_dir or load_recipe(args.recipe).work_dir
    console.print(f"report: {work_dir}/report.md")
    return 0


def _ops(args: argparse.Namespace) -> int:
    import inspect

    from rich.markup import escape
    from rich.table import Table

    from llmlab.data.ops import OPS, op_arguments

    table = Table(title=f"{len(OPS)} data operators")
    for col in ("operator", "kind", "what it does", "arguments"):
        table.add_column(col)
    for name, cls in sorted(OPS.items(), key=lambda kv: (kv[1].kind, kv[0])):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        args_text = ", ".join(
            k if v is inspect.Parameter.empty else f"{k}={v!r}"
            for k, v in op_arguments(cls).items()
        )
        # escape: a docstring's "[min, max]" is text, not a rich style tag
        table.add_row(name, cls.kind, escape(doc), escape(args_text) or "-")
    console().print(table)  # full width off a terminal: never cut
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from llmlab.data.analyze import analyze

    out = args.out or args.input + ".analysis"
    report = analyze(args.input, out, text_key=args.text_key)
    print(f"analyzed {report['records']} records → {out}/analysis.md")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    import os

    from llmlab.data.ops.base import RecipeError
    from llmlab.data.recipe import load_recipe
    from llmlab.data.schedule import Scheduler, read_history

    if args.history:
        state_dir = args.state_dir or os.path.join(load_recipe(args.recipe).work_dir, "schedule")
        _print_history(read_history(state_dir), state_dir)
        return 0
    if not args.cron:
        raise RecipeError('--cron is required, e.g. --cron "0 1 * * *" (every day at 01:00)')
    if args.max_runs is not None and args.max_runs < 1:
        raise RecipeError(f"--max-runs must be at least 1, got {args.max_runs}")
    scheduler = Scheduler(
        args.recipe,
        args.cron,
        args.state_dir,
        args.executor,
        log=lambda line: print(line, flush=True),
    )
    entries = scheduler.loop(max_runs=args.max_runs, run_now=args.run_now)
    failed = sum(e["status"] == "failed" for e in entries)
    print(f"{len(entries)} run(s), {failed} failed; history: {scheduler.history_path}")
    return 0


def _print_history(entries: list[dict], state_dir: str) -> None:
    from rich.table import Table

    table = Table(title=f"{len(entries)} scheduled run(s) in {state_dir}")
    for col in ("run", "start", "end", "status", "read", "written", "report / error"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["run_id"], e["start"], e["end"], e["status"], str(e.get("records_read", "-")),
                      str(e.get("records_written", "-")), e.get("report") or e.get("error", ""))  # fmt: skip
    console().print(table)  # full width off a terminal: never cut


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llmlab.data.api import create_app

    app = create_app(args.state_dir, max_concurrent=args.max_concurrent, max_queued=args.max_queued,
                     api_key=args.api_key, root=args.root, allow_network=args.allow_network)  # fmt: skip
    root = app.state.manager.root
    print(
        f"llmlab data API on http://{args.host}:{args.port} (runs in {args.state_dir}; recipes confined to "
        f"{root}; {'API key required' if args.api_key else 'no API key'}; docs at /docs)",
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.manager.close()
    return 0
