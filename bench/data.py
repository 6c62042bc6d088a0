"""Data pipeline throughput and near-duplicate quality: llmlab beside `datasketch` MinHashLSH.

    .venv/bin/python bench/data.py                 # 200k documents (a few minutes)
    .venv/bin/python bench/data.py --docs 20000    # quick run
    (datasketch comes with the `bench` extra: pip install -e '.[bench]')

The corpus is generated: English-like documents of 60–160 words drawn from a Zipfian vocabulary of
made-up words, plus planted near-duplicate clusters — copies of a document with a few word
substitutions/insertions/deletions (their character 5-gram Jaccard with the source is printed; it
stays above the threshold). Ground truth: a document is a duplicate when an earlier document of its
cluster exists, so keep-first dedup should remove exactly those. Three rows, same shingling (character
5-grams), threshold 0.7, 128 permutations, all in one process, one after the other:

- llmlab recipe — the standard recipe through `llmlab.data`'s executor, reading and writing jsonl:
  5 clean mappers (clean_html, clean_links, clean_email, whitespace and punctuation normalization),
  5 filters (text length, alnum ratio, special-char ratio, char and word repetition) and
  minhash_dedup (tracer on; per-batch checkpoints off unless --checkpoint).
- llmlab dedup — only the minhash_dedup operator over the in-memory records (batches of --batch).
- datasketch — MinHash (update_batch over the UTF-8 5-gram set, hashed with xxhash's xxh32 via
  `hashfunc` — its default SHA-1 would make the peer slow for a reason that is not MinHash) +
  MinHashLSH query/insert, in memory, keep-first; candidates are verified by the estimated
  Jaccard ≥ threshold, as llmlab's are. Both sides shingle the raw text into the same character
  5-grams (a text shorter than 5 characters is one shingle).

Only the two dedup-only rows are compared (the "× datasketch" column); the full recipe does ten
more operators and file I/O, so it gets no ratio against a dedup-only peer.

Throughput is documents / wall second of each row; precision and recall are of the removed
documents against the planted truth.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np

THRESHOLD, NUM_PERM, NGRAM = 0.7, 128, 5


# -- corpus ------------------------------------------------------------------------------------
def make_vocabulary(size: int, rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


def edit_words(words: list[str], vocab: list[str], edits: int, rng: random.Random) -> list[str]:
    out = list(words)
    for _ in range(edits):
        kind, at = rng.random(), rng.randrange(len(out))
        if kind < 0.4:
            out[at] = rng.choice(vocab)
        elif kind < 0.7:
            out.insert(at, rng.choice(vocab))
        elif len(out) > 10:
            del out[at]
    return out


def generate(
    n_docs: int, dup_share: float = 0.2, seed: int = 0
) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """(texts, cluster id per doc, (source, copy) pairs). Copies are spread over the stream."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vocab = make_vocabulary(20000, rng)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    n_copies = int(n_docs * dup_share)
    n_orig = n_docs - n_copies
    lengths = nrng.integers(60, 161, size=n_orig)
    flat = nrng.choice(len(vocab), size=int(lengths.sum()), p=weights / weights.sum())
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    originals = [[vocab[i] for i in flat[bounds[d] : bounds[d + 1]]] for d in range(n_orig)]
    docs = [(" ".join(w).capitalize() + ".", d) for d, w in enumerate(originals)]
    pairs_src: list[int] = []
    for _ in range(n_copies):
        src = rng.randrange(n_orig)
        copy = edit_words(originals[src], vocab, rng.randint(1, 5), rng)
        docs.append((" ".join(copy).capitalize() + ".", src))
        pairs_src.append(src)
    order = list(range(len(docs)))
    rng.shuffle(order)
    texts = [docs[i][0] for i in order]
    clusters = np.array([docs[i][1] for i in order])
    position = {old: new for new, old in enumerate(order)}
    pairs = [(position[s], position[n_orig + k]) for k, s in enumerate(pairs_src)]
    return texts, clusters, pairs


def truth_duplicates(clusters: np.ndarray) -> set[int]:
    seen: set[int] = set()
    dups = set()
    for i, c in enumerate(clusters.tolist()):
        if c in seen:
            dups.add(i)
        seen.add(c)
    return dups


def shingle_set(text: str) -> set[str]:
    return {text[i : i + NGRAM] for i in range(max(1, len(text) - NGRAM + 1))}


def planted_jaccard(
    texts: list[str], pairs: list[tuple[int, int]], sample: int = 2000
) -> tuple[float, float]:
    rng = random.Random(1)
    chosen = rng.sample(pairs, min(sample, len(pairs)))
    values = []
    for a, b in chosen:
        sa, sb = shingle_set(texts[a]), shingle_set(texts[b])
        values.append(len(sa & sb) / len(sa | sb))
    return float(np.min(values)), float(np.median(values))


def quality(removed: set[int], truth: set[int]) -> tuple[float, float]:
    tp = len(removed & truth)
    return (tp / len(removed) if removed else 1.0), (tp / len(truth) if truth else 1.0)


# -- the three runs ----------------------------------------------------------------------------
def run_llmlab_recipe(
    texts: list[str], batch: int, checkpoint: bool, np_workers: int
) -> tuple[float, set[int], dict]:
    from llmlab.data.executor import run_recipe
    from llmlab.data.recipe import parse_recipe

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "corpus.jsonl")
        with open(src, "w", encoding="utf-8") as fh:
            for i, t in enumerate(texts):
                fh.write(json.dumps({"id": i, "text": t}) + "\n")
        out = os.path.join(tmp, "out.jsonl")
        recipe = parse_recipe({
            "project": "bench-data", "work_dir": os.path.join(tmp, "run"), "batch_size": batch, "np": np_workers,
            "tracer": True, "checkpoint": checkpoint,
            "sources": [{"type": "jsonl", "path": src}],
            "process": [
                {"clean_html": {}}, {"clean_links": {}}, {"clean_email": {}},
                {"whitespace_normalization": {}}, {"punctuation_normalization": {}},
                {"text_length_filter": {"min": 50, "max": 100000}},
                {"alnum_ratio_filter": {"min": 0.5}},
                {"special_char_ratio_filter": {"max": 0.25}},
                {"char_repetition_filter": {"n": 10, "max": 0.5}},
                {"word_repetition_filter": {"n": 5, "max": 0.5}},
                {"minhash_dedup": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM}},
            ],
            "sinks": [{"type": "jsonl", "path": out}],
        })  # fmt: skip
        start = time.perf_counter()
        report = run_recipe(recipe, progress=True)
        seconds = time.perf_counter() - start
        with open(out, encoding="utf-8") as fh:
            kept_ids = {json.loads(line)["id"] for line in fh}
    removed = set(range(len(texts))) - kept_ids
    by_op = {
        row["name"] if "name" in row else row.get("op"): row for row in report.get("operators", [])
    }
    return seconds, removed, by_op


def run_llmlab_dedup(texts: list[str], batch: int) -> tuple[float, set[int]]:
    from llmlab.data.ops import build_op
    from llmlab.data.ops.base import TraceHook

    op = build_op("minhash_dedup", {"threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM})
    records = [{"id": i, "text": t} for i, t in enumerate(texts)]
    kept: set[int] = set()
    start = time.perf_counter()
    for lo in range(0, len(records), batch):
        kept.update(r["id"] for r in op.process(records[lo : lo + batch], TraceHook()))
    return time.perf_counter() - start, set(range(len(texts))) - kept


def run_datasketch(texts: list[str]) -> tuple[float, set[int]]:
    from datasketch import MinHash, MinHashLSH
    from xxhash import xxh32_intdigest  # a fast 32-bit hash, as llmlab's rolling hash is

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    signatures: dict[int, MinHash] = {}
    removed: set[int] = set()
    start = time.perf_counter()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=xxh32_intdigest)
        m.update_batch([s.encode("utf-8") for s in shingle_set(text)])
        if any(m.jaccard(signatures[j]) >= THRESHOLD for j in lsh.query(m)):
            removed.add(i)
            continue
        lsh.insert(i, m)
        signatures[i] = m
    return time.perf_counter() - start, removed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--docs", type=int, default=200000, help="documents in the generated corpus"
    )
    parser.add_argument(
        "--dup-share",
        type=float,
        default=0.2,
        help="share of documents that are planted near-copies",
    )
    parser.add_argument(
        "--batch", type=int, default=2048, help="records per batch (recipe and dedup-only)"
    )
    parser.add_argument(
        "--np", type=int, default=1, help="worker processes for the recipe's mappers/filters"
    )
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="commit a checkpoint after every batch (pickles the dedup index)",
    )
    parser.add_argument("--skip-datasketch", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    t0 = time.perf_counter()
    texts, clusters, pairs = generate(args.docs, args.dup_share)
    truth = truth_duplicates(clusters)
    jmin, jmed = planted_jaccard(texts, pairs)
    mean_chars = sum(map(len, texts)) / len(texts)
    console.print(f"corpus: {len(texts):,} documents (mean {mean_chars:.0f} chars), {len(truth):,} planted duplicates; "
                  f"planted pairs' 5-gram Jaccard min {jmin:.2f} / median {jmed:.2f}; generated in {time.perf_counter() - t0:.1f}s")  # fmt: skip

    rows = []
    secs, removed, by_op = run_llmlab_recipe(texts, args.batch, args.checkpoint, args.np)
    filtered = sum(
        row.get("removed", 0) for name, row in by_op.items() if name and name.endswith("_filter")
    )
    rows.append(
        (
            "llmlab recipe",
            f"jsonl in/out + 5 mappers + 5 filters + dedup (filters removed {filtered})",
            secs,
            removed,
        )
    )
    console.print(
        "recipe seconds per operator: "
        + ", ".join(f"{n} {r['seconds']:.1f}" for n, r in by_op.items())
    )
    secs, removed = run_llmlab_dedup(texts, args.batch)
    rows.append(("llmlab dedup", "minhash_dedup only, in memory", secs, removed))
    if not args.skip_datasketch:
        secs, removed = run_datasketch(texts)
        rows.append(("datasketch", "MinHash + MinHashLSH only, in memory", secs, removed))
    peer = rows[-1][2] if not args.skip_datasketch else None

    table = Table(
        title=f"near-dedup of {len(texts):,} docs: threshold {THRESHOLD}, {NUM_PERM} perms, char {NGRAM}-grams"
    )
    for col in ("system", "seconds", "docs/s", "× datasketch", "removed", "precision", "recall"):
        table.add_column(col, justify="left" if col == "system" else "right")
    results = []
    for name, _what, secs, removed in rows:
        precision, recall = quality(removed, truth)
        # like with like: only dedup-only rows get a ratio against the dedup-only peer
        speedup = f"{peer / secs:.2f}×" if peer and name != "llmlab recipe" else "-"
        table.add_row(name, f"{secs:.1f}", f"{len(texts) / secs:,.0f}", speedup, f"{len(removed):,}",
                      f"{precision:.4f}", f"{recall:.4f}")  # fmt: skip
        results.append({"system": name, "seconds": secs, "docs_per_s": len(texts) / secs, "removed": len(removed),
                        "precision": precision, "recall": recall})  # fmt: skip
    console.print(table)
    for name, what, *_ in rows:
        console.print(f"  {name}: {what}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
