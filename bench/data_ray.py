"""The same recipe under the local executor (1 and N processes) and the Ray executor (N CPUs).

    .venv/bin/python bench/data_ray.py                         # 40k documents, N = 2
    .venv/bin/python bench/data_ray.py --docs 200000 --cpus 8 --batch 20000

The corpus is generated: documents of 60–120 words from a 3,000-word made-up vocabulary; every
tenth document is a near copy (three words replaced) of a random earlier one, so copies and
originals sit in different batches and partitions. The recipe: clean_html, clean_links,
whitespace_normalization, text_length_filter, alnum_ratio_filter, word_repetition_filter,
exact_dedup, minhash_dedup (threshold 0.7). Each row reads and writes jsonl with per-batch
checkpoints, as `llmlab data run` does. Ray's start-up is timed apart (it is paid once per
process). The last column checks that every row wrote byte-identical output to the local
single-process row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import tempfile
import time


def make_corpus(path: str, docs: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    vocab = [
        "".join(
            rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))
        )
        for _ in range(3000)
    ]
    texts, planted = [], 0
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(docs):
            if i >= 10 and i % 10 == 0:
                words = rng.choice(texts).split()
                for _ in range(3):
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                planted += 1
            else:
                words = [rng.choice(vocab) for _ in range(rng.randint(60, 120))]
            text = " ".join(words)
            texts.append(text)
            fh.write(json.dumps({"id": i, "text": f"<p>{text}</p> https://example.org/{i}"}) + "\n")
    return planted


def recipe(folder: str, name: str, batch: int, np_: int, executor: str) -> dict:
    from llmlab.data.recipe import parse_recipe

    return parse_recipe({
        "project": name, "work_dir": os.path.join(folder, name), "batch_size": batch, "np": np_, "executor": executor,
        "sources": [{"type": "jsonl", "path": os.path.join(folder, "corpus.jsonl")}],
        "process": [{"clean_html": {}}, {"clean_links": {}}, {"whitespace_normalization": {}},
                    {"text_length_filter": {"min": 50}}, {"alnum_ratio_filter": {"min": 0.5}},
                    {"word_repetition_filter": {"max": 0.5}}, {"exact_dedup": {}}, {"minhash_dedup": {"threshold": 0.7}}],
        "sinks": [{"type": "jsonl", "path": os.path.join(folder, f"{name}.jsonl")}],
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=40_000)
    parser.add_argument("--cpus", type=int, default=2, help="worker processes (local) and Ray CPUs")
    parser.add_argument("--batch", type=int, default=5_000, help="records per batch")
    args = parser.parse_args()

    import ray

    from llmlab.data.executor import run_recipe

    folder = tempfile.mkdtemp(prefix="llmlab-bench-ray-")
    planted = make_corpus(os.path.join(folder, "corpus.jsonl"), args.docs)
    print(
        f"{args.docs:,} documents ({planted:,} planted near copies), batch {args.batch:,}, {args.cpus} CPUs; files in {folder}"
    )
    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    ray_start = time.perf_counter() - start
    rows = []
    for name, np_, executor in (
        ("local-np1", 1, "local"),
        (f"local-np{args.cpus}", args.cpus, "local"),
        ("ray", args.cpus, "ray"),
    ):
        start = time.perf_counter()
        report = run_recipe(recipe(folder, name, args.batch, np_, executor), progress=False)
        seconds = time.perf_counter() - start
        digest = hashlib.sha256(
            open(os.path.join(folder, f"{name}.jsonl"), "rb").read()
        ).hexdigest()
        removed = {o["name"]: o["removed"] for o in report["operators"]}["minhash_dedup"]
        rows.append((name, seconds, report["records_written"], removed, digest))
    ray.shutdown()
    base = rows[0][1]
    print(
        "\n| executor | seconds | docs/s | vs local-np1 | written | minhash removed | output = local-np1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, seconds, written, removed, digest in rows:
        same = "yes" if digest == rows[0][4] else "NO"
        print(
            f"| {name} | {seconds:.1f} | {args.docs / seconds:,.0f} | {base / seconds:.2f}× | {written:,} | {removed:,} | {same} |"
        )
    print(f"\nRay start-up (not in the rows): {ray_start:.1f} s")


if __name__ == "__main__":
    main()
