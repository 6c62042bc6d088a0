"""How `repair_mojibake`'s accuracy grows with the language model's training text (a learning curve).

    .venv/bin/python bench/mojibake.py                              # fractions 1/4, 1/2, all (≈4 min)
    .venv/bin/python bench/mojibake.py --chars 4000 --fractions 1   # quick check
    .venv/bin/python bench/mojibake.py --extra my_chinese_text/     # what your own clean text adds
    .venv/bin/python bench/mojibake.py --lm gemma3-270m --chars 4000  # n-gram vs language model

Each row counts a character n-gram model on every k-th line of the bundled training text (news and
product reviews thinned alike; `--extra` corpora always whole), corrupts the first `--chars` held-out
news characters exactly like the notes and repairs them. Damaged characters are those that lost a
byte; "all chars" counts every character of the text. The last line fits errors ∝ N^-b through the
rows (N = training characters) and says how much text the fit would need for 99 % of damaged
characters — an extrapolation, printed as one.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=40000, help="held-out characters to repair")
    parser.add_argument(
        "--skip", type=int, default=0, help="skip this many held-out characters first"
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument(
        "--extra", nargs="*", default=[], help="clean text files/folders added to every row"
    )
    parser.add_argument("--oracle", action="store_true", help="add a row that also counts the held-out lines "
                        "themselves: an upper bound showing what the decoder does when the model knows the text")  # fmt: skip
    parser.add_argument("--lm", help="instead: compare the n-gram repair with the language model's "
                        "(e.g. gemma3-270m) on the held-out slice and the hand-checked notes sample")  # fmt: skip
    parser.add_argument("--only", choices=["notes", "news"], help="with --lm: one of the two texts")
    parser.add_argument("--passes", type=int, default=1, help="with --lm: language-model passes")
    args = parser.parse_args()
    if args.lm:
        return compare_lm(args)

    from rich.console import Console
    from rich.table import Table

    from llmlab.data import charlm
    from llmlab.data.mojibake import DROPPED, LM_ORDER, corrupt, repair

    truth = charlm.heldout_text(args.chars, skip_chars=args.skip)
    damaged = [i for i, c in enumerate(truth) if set(c.encode()) & set(DROPPED)]
    broken = corrupt(truth)
    lines = charlm.training_text().split("\n")
    extra = [charlm.read_corpus(p) for p in args.extra]
    table = Table(
        title=f"repair_mojibake on {len(truth):,} held-out characters ({len(damaged):,} damaged)"
    )
    for col in (
        "training text",
        "training chars",
        "errors",
        "damaged chars",
        "all chars",
        "seconds",
    ):
        table.add_column(col, justify="right")
    points = []
    rows = [(f"1/{round(1 / f)} of bundled" if f < 1 else "all bundled", lines[:: round(1 / f)])
            for f in sorted(args.fractions)]  # fmt: skip
    if args.oracle:
        rows.append(
            ("all + the held-out lines (oracle)", lines + charlm.heldout_text().split("\n"))
        )
    for label, chosen in rows:
        text = "\n".join(["\n".join(chosen), *extra])
        start = time.perf_counter()
        lm = charlm.CharNgramModel(text, LM_ORDER)
        out = repair(broken, lm=lm)
        errors = sum(out[i] != truth[i] for i in damaged)
        all_right = sum(a == b for a, b in zip(out, truth)) / len(truth)
        if "oracle" not in label:
            points.append((len(text), errors))
        seconds = f"{time.perf_counter() - start:.0f}"
        table.add_row(label + (" + extra" if extra else ""), f"{len(text):,}", str(errors),
                      f"{1 - errors / len(damaged):.2%}", f"{all_right:.2%}", seconds)  # fmt: skip
    Console(width=120).print(table)
    if len(points) >= 2 and all(e > 0 for _, e in points):  # fit through the non-oracle rows
        slope, intercept = np.polyfit(
            np.log([n for n, _ in points]), np.log([e for _, e in points]), 1
        )
        target = 0.01 * len(damaged)
        needed = math.exp((math.log(target) - intercept) / slope)
        print(f"fit: errors ∝ N^{slope:.2f}; 99 % of damaged characters would need ≈{needed / 1e6:,.0f}M "
              f"characters of training text like these (extrapolated)")  # fmt: skip


def compare_lm(args) -> None:
    """Damaged characters recovered by the n-gram repair and with the language model choosing."""
    import os
    import sys
    from pathlib import Path

    from llmlab.data import charlm
    from llmlab.data.lm_repair import GemmaScorer, repair_with_lm
    from llmlab.data.mojibake import DROPPED, corrupt, repair

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_data_mojibake import NOTES_TRUTH  # the hand-checked lines live beside their test

    start = time.perf_counter()
    scorer = GemmaScorer.packaged(args.lm)
    print(
        f"{args.lm} loaded in {time.perf_counter() - start:.0f} s; load average {os.getloadavg()}"
    )
    samples = {
        "hand-checked notes sample": "\n".join(NOTES_TRUTH.values()),
        f"held-out news, {args.chars:,} chars from {args.skip:,}": charlm.heldout_text(
            args.chars, skip_chars=args.skip
        ),
    }
    print(
        f"| text | damaged chars | n-gram | n-gram s | + {args.lm}, {args.passes} pass(es) | LM s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, truth in samples.items():
        damaged = [i for i, c in enumerate(truth) if set(c.encode()) & set(DROPPED)]
        broken = corrupt(truth)
        row = []
        if args.only and args.only not in label:
            continue
        for fix in (repair, lambda t: repair_with_lm(t, scorer, progress=True, passes=args.passes)):
            t0 = time.perf_counter()
            out = fix(broken)
            row.append(
                (sum(out[i] == truth[i] for i in damaged) / len(damaged), time.perf_counter() - t0)
            )
        (a, ta), (b, tb) = row
        print(
            f"| {label} | {len(damaged):,} | {a:.2%} | {ta:.0f} | {b:.2%} | {tb:.0f} |", flush=True
        )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
