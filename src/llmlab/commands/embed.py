"""`llmlab embed`: text lines in, sentence vectors out (an embedding model such as minilm-l6-v2).

llmlab embed notes.txt --out vectors.npy          # one row per line, float32 [lines, dim]
llmlab embed notes.txt --out vectors.jsonl        # {"text": ..., "embedding": [...]} per line
printf 'What is dropout?\\nA cat.\\n' | llmlab embed   # stdin in, JSONL on stdout

Vectors are mean-pooled over tokens and unit length (cosine similarity = dot product) unless
--no-normalize. Every line is one text, empty lines included, so row i is line i. The output is
written to a temporary file and renamed: a failed run leaves an earlier output untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmlab.cli import common_parser
from llmlab.commands.common import positive_int
from llmlab.errors import LlmlabError

DEFAULT_EMBEDDING_MODEL = "minilm-l6-v2"
FORMATS = (".npy", ".jsonl")


def register(subparsers):
    p = subparsers.add_parser(
        "embed",
        parents=[common_parser()],
        help="turn text lines into vectors (.npy or JSONL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input", nargs="?", default="-", help="text file, one text per line (default: stdin)"
    )
    p.add_argument(
        "--out", default=None, help="output .npy or .jsonl file (default: JSONL on stdout)"
    )
    p.add_argument(
        "--model",
        default=DEFAULT_EMBEDDING_MODEL,
        help=f"an embedding model: packaged name or HF folder (default {DEFAULT_EMBEDDING_MODEL})",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=32, help="texts per batch (default 32)"
    )
    p.add_argument("--no-normalize", action="store_true", help="keep the raw mean-pooled vectors")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for PyTorch (at least 1)"
    )
    p.set_defaults(func=run)


def read_lines(source: str) -> list[str]:
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LlmlabError(f"{source}: no such file") from None
        except UnicodeDecodeError as exc:
            raise LlmlabError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        except IsADirectoryError:
            raise LlmlabError(f"{source}: is a folder, expected a text file") from None
    lines = text.splitlines()
    if not lines:
        raise LlmlabError(f"{'stdin' if source == '-' else source}: no text lines to embed")
    return lines


def run(args) -> int:
    import numpy as np

    from llmlab.commands.common import console
    from llmlab.device import set_threads
    from llmlab.loading import kind_of, load
    from llmlab.models.bert import embed

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in FORMATS:
        raise LlmlabError(f"--out {out}: choose a .npy or .jsonl file name")
    set_threads(args.threads)
    kind = kind_of(args.model)
    if kind != "embedding":
        raise LlmlabError(
            f"'{args.model}' is a {kind} model, not an embedding model; "
            f"use e.g. --model {DEFAULT_EMBEDDING_MODEL} (see `llmlab models`)"
        )
    texts = read_lines(args.input)
    with console(stderr=True).status(f"embedding {len(texts)} lines with {args.model} …"):
        model, tokenizer = load(args.model, device=args.device)
        vectors = embed(
            texts, tokenizer, model, batch_size=args.batch_size, normalize=not args.no_normalize
        )
    vectors = vectors.cpu().numpy().astype(np.float32)
    if out is None:
        for text, vector in zip(texts, vectors):
            sys.stdout.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for text, vector in zip(texts, vectors):
                f.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    os.replace(tmp, out)
    print(f"{len(texts)} vectors of dimension {vectors.shape[1]} → {out}", file=sys.stderr)
    return 0
