"""Which Gemma 3 state makes a sentence embedding? A sweep on the RAG eval's dev split.

    .venv/bin/python bench/rag_embedders.py            # ≈3 min on 2 cores: 2 prompts × 19 depths × 2 poolings
    .venv/bin/python bench/rag_embedders.py --split test --layers 15 --prompts eol --pools last

For every text (the notes' 80 passages and the split's questions) one forward pass of Gemma 3
270M records every decoder layer's output; an embedding is either the mean over the text's
positions or the last position's state, of the text alone (`plain`) or inside the PromptEOL
prompt (`eol`, rag/lm_embed.py). Vectors are centred on the passages' mean and normalized, as the
index does. Printed per setting: dense recall@5 and MRR, and the hybrid's (BM25 + that ranking,
the index's weighted RRF). Depth 18 is the final norm's output. The shipped default (eol, last,
layer 15) was chosen from this table on dev; docs/rag.md has the run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import llmlab
from llmlab.rag.bm25 import tokenize
from llmlab.rag.evaluate import gold_rank, load_eval_set
from llmlab.rag.index import Index, fuse, unit_rows
from llmlab.rag.lm_embed import PROMPT, LMEmbedder
from llmlab.rag.store import read_document

PROMPTS = {"plain": "{text}", "eol": PROMPT}


def states(model, tokenizer, texts, prompt):
    """{depth: {"mean": [n, d], "last": [n, d]}}: every layer's output and the final norm's."""
    embedder = LMEmbedder("sweep", model, tokenizer, prompt=prompt)  # the index's prompt ids
    layers = model.model.layers
    captured = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, d=d: captured.update({d: out}))
        for d, layer in enumerate(layers)
    ]
    out = {d: {"mean": [], "last": []} for d in range(len(layers) + 1)}
    with torch.inference_mode():
        for text in texts:
            ids = embedder.prompt_ids(text)
            captured[len(layers)] = model.model(torch.tensor([ids]))
            for d, h in captured.items():
                h = (h[0] if isinstance(h, tuple) else h)[0, 1:].float()  # without BOS
                out[d]["mean"].append(h.mean(0).numpy())
                out[d]["last"].append(h[-1].numpy())
    for hook in hooks:
        hook.remove()
    return {d: {k: np.stack(v) for k, v in pools.items()} for d, pools in out.items()}


def scores(index, items, passages, questions):
    center = passages.mean(0)  # centred and normalized as the index does
    p, q = unit_rows(passages - center), unit_rows(questions - center)
    dense, hybrid = [], []
    for item, row in zip(items, q):
        semantic = p @ row
        order = [int(i) for i in np.argsort(-semantic, kind="stable")]
        lexical = index.bm25.scores(tokenize(item["question"]))
        fused = [d for d, _ in fuse(lexical, semantic)]
        dense.append(gold_rank(index, order, item["lines"]))
        hybrid.append(gold_rank(index, fused, item["lines"]))

    def summary(ranks):
        r5 = sum(r is not None and r <= 5 for r in ranks) / len(ranks)
        return r5, sum(1 / r for r in ranks if r) / len(ranks)

    return summary(dense), summary(hybrid)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--split", default="dev", choices=["dev", "test"])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--prompts", default="plain,eol")
    p.add_argument("--pools", default="mean,last")
    p.add_argument("--layers", default=None, help="comma-separated depths (default: all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    text, name = read_document()
    index = Index.from_markdown(text, source=name, embedder=None)  # chunks + BM25 only
    items = load_eval_set(split=args.split)
    model, tokenizer = llmlab.load(args.model, device="cpu")
    model.eval()
    passages = [c.index_text() for c in index.chunks]
    print("| prompt | pool | depth | dense recall@5 | dense MRR | hybrid recall@5 | hybrid MRR |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for prompt in args.prompts.split(","):
        started = time.perf_counter()
        on_passages = states(model, tokenizer, passages, PROMPTS[prompt])
        on_questions = states(model, tokenizer, [i["question"] for i in items], PROMPTS[prompt])
        seconds = time.perf_counter() - started
        depths = [int(d) for d in args.layers.split(",")] if args.layers else list(on_passages)
        for pool in args.pools.split(","):
            for d in depths:
                (r5, mrr), (h5, hmrr) = scores(
                    index, items, on_passages[d][pool], on_questions[d][pool]
                )
                print(f"| {prompt} | {pool} | {d} | {r5:.3f} | {mrr:.3f} | {h5:.3f} | {hmrr:.3f} |")
        print(f"({prompt}: {len(passages) + len(items)} texts embedded in {seconds:.0f} s)")


if __name__ == "__main__":
    main()
