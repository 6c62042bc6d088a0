"""`llmlab` command-line entry point.

Thin on purpose: each subcommand lives in `llmlab/commands/<name>.py` with a `register(subparsers)`
function that adds its parser and sets `func`. Run `llmlab --help` to see them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmlab.errors import LlmlabError

# Each module adds one or more subcommands. Keep imports inside the modules light (import torch
# inside the handlers) so `llmlab --help` stays fast.
COMMAND_MODULES = [
    "llmlab.commands.data",
    "llmlab.commands.chat",
    "llmlab.commands.generate",
    "llmlab.commands.models",
    "llmlab.commands.embed",
    "llmlab.commands.train",
    "llmlab.commands.posttrain",
    "llmlab.commands.plot",
    "llmlab.commands.serve",
    "llmlab.commands.exp",
    "llmlab.commands.agent",
    "llmlab.commands.rag",
    "llmlab.commands.quantize",
    "llmlab.commands.eval",
    "llmlab.commands.reason",
    "llmlab.commands.coach",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (`error: llmlab chat: argument --threads:
    must be at least 1, got 0`) with exit status 2, instead of the usage block and the error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def common_parser() -> argparse.ArgumentParser:
    """Options every subcommand accepts (add as `parents=[common_parser()]`)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS so a subcommand's default never overwrites `llmlab --debug CMD`.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show full tracebacks on errors",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llmlab", description="llmlab: a hackable full-stack LLM system")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one clear line unless --debug
        if getattr(args, "debug", False):
            raise
        if isinstance(exc, LlmlabError):
            print(f"error: {exc}", file=sys.stderr)
        else:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"error: {type(exc).__name__}: {message} (run with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
