"""`llmlab plot RUN_DIR`: loss / learning-rate / grad-norm curves and a gradient-flow chart (PNG).

llmlab plot runs/pretrain-tiny
"""

from __future__ import annotations


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    p = subparsers.add_parser(
        "plot", parents=[common_parser()], help="draw a training run's curves (PNG)"
    )
    p.add_argument("run_dir", help="a run folder with metrics.jsonl")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmlab.train.plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0
