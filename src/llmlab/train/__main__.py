"""`python -m llmlab.train …` — the entry point torchrun needs (it launches modules, not commands).

    torchrun --nproc_per_node 2 -m llmlab.train pretrain --config recipes/pretrain-tiny.yaml

Takes the same arguments as `llmlab train …`; errors print one line, as in the CLI.
"""

import argparse
import sys

from llmlab.cli import common_parser
from llmlab.commands.train import add_train_subcommands
from llmlab.errors import LlmlabError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmlab.train")
    sub = parser.add_subparsers(dest="train_command", metavar="WHAT")
    sub.required = True
    add_train_subcommands(sub, [common_parser()])
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LlmlabError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
