"""`llmlab rag`: search the notes and answer from them with citations.

llmlab rag index                                  # build + cache the default index (bundled notes)
llmlab rag index --source my-notes.md --out runs/rag-index --embedder minilm-l6-v2
llmlab rag search "为什么要做归一化" --k 5 --json    # JSON list: id, heading, score, text, lines
llmlab rag ask "BN 和 LN 有什么区别" [--model smollm2-135m-instruct] [--json]
llmlab rag ask "BN 和 LN 有什么区别" --model gemma3-270m --adapter DIR   # the notes assistant (SFT)
llmlab rag eval --split test                      # recall@1/5/10 and MRR per mode (bundled eval set)

Without --index, search/ask/eval use the default index of the bundled notes, built in seconds on
first use and cached under ~/.cache/llmlab/rag (LLMLAB_CACHE moves it).
"""

from __future__ import annotations

import json
import sys

from llmlab.cli import common_parser
from llmlab.commands.common import add_model_options, positive_int


def register(subparsers):
    p = subparsers.add_parser(
        "rag", parents=[common_parser()], help="search the notes; answer with citations"
    )
    sub = p.add_subparsers(dest="rag_command", metavar="ACTION")
    sub.required = True

    index = sub.add_parser("index", parents=[common_parser()], help="build and save an index")
    index.add_argument("--source", default="bundled:notes-zh.md", help="a Markdown file")
    index.add_argument("--out", default=None, help="index folder (default: the cache)")
    _index_options(index)
    index.set_defaults(func=run_index)

    search = sub.add_parser("search", parents=[common_parser()], help="the best passages")
    search.add_argument("query")
    search.add_argument("--k", type=positive_int, default=5, help="passages to return (default 5)")
    search.add_argument("--json", action="store_true", help="print a JSON list")
    _search_options(search)
    search.set_defaults(func=run_search)

    ask = sub.add_parser("ask", parents=[common_parser()], help="answer with numbered citations")
    ask.add_argument("question")
    ask.add_argument(
        "--k", type=positive_int, default=3, help="passages given to the model (default 3)"
    )
    ask.add_argument("--json", action="store_true", help="print {answer, citations}")
    ask.add_argument(
        "--max-tokens", type=positive_int, default=256, help="most new tokens (default 256)"
    )
    _search_options(ask)
    add_model_options(ask)
    ask.set_defaults(func=run_ask)

    ev = sub.add_parser("eval", parents=[common_parser()], help="recall@k and MRR per mode")
    ev.add_argument("--split", default="test", choices=["dev", "test", "all"])
    ev.add_argument("--eval-set", default="bundled:notes-eval.jsonl", help="JSONL eval set")
    ev.add_argument("--modes", default="bm25,dense,hybrid", help="comma-separated modes")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument(
        "--limit", type=positive_int, default=None, help="only the first N questions of the split"
    )
    _search_options(ev, mode=False)
    ev.set_defaults(func=run_eval)


def _index_options(p):
    p.add_argument(
        "--embedder",
        default="gemma3-270m",
        help="a causal LM (gemma3-270m, default: PromptEOL states), notes-biencoder (trained on "
        "the notes), a BERT name (minilm-l6-v2) or none",
    )
    p.add_argument(
        "--max-chars", type=positive_int, default=500, help="chunk size limit (default 500)"
    )


def _search_options(p, mode: bool = True):
    p.add_argument("--index", default=None, help="an index folder from `llmlab rag index --out`")
    if mode:
        p.add_argument("--mode", default="hybrid", choices=["bm25", "dense", "hybrid"])
    p.add_argument("--rerank", default=None, help="rerank the top 20 with this language model")
    p.add_argument("--candidates", type=positive_int, default=20, help="passages the reranker sees")


def _embedder(name: str) -> str | None:
    return None if name.lower() in ("none", "") else name


def _open_index(args):
    from llmlab.rag import Index, default_index

    return Index.load(args.index) if args.index else default_index()


def _reranker(args):
    if not args.rerank:
        return None
    from llmlab.rag.rerank import LMReranker

    return LMReranker.load(args.rerank)


def run_index(args) -> int:
    import time

    from llmlab.rag.store import build_index, default_index_dir

    started = time.perf_counter()
    embedder = _embedder(args.embedder)
    index = build_index(args.source, embedder, args.max_chars)
    out = args.out or default_index_dir(args.source, embedder, args.max_chars)
    index.save(out)
    seconds = time.perf_counter() - started
    print(
        f"indexed {len(index.chunks)} chunks of {args.source} "
        f"(dense: {index.embedder_name or 'none'}) in {seconds:.1f}s → {out}"
    )
    return 0


def run_search(args) -> int:
    index = _open_index(args)
    hits = index.search(
        args.query, k=args.k, mode=args.mode, reranker=_reranker(args), candidates=args.candidates
    )
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return 0
    for n, hit in enumerate(hits, start=1):
        preview = " ".join(hit.text.split())[:160]
        print(f"{n}. [{hit.score:.4f}] {hit.heading}  ({hit.id})\n   {preview}")
    return 0


def run_ask(args) -> int:
    from llmlab.commands.common import load_model
    from llmlab.generation import GenerationConfig, generate
    from llmlab.rag.answer import answer_question
    from llmlab.tokenize.tokenizer import apply_chat

    index = _open_index(args)
    model, tokenizer = load_model(args)

    # A base model's question/answer frame runs on into the next question: stop where its chat
    # format ends an answer, as `llmlab chat` does.
    stops = list(getattr(tokenizer, "chat_stop_strings", []))

    def generate_fn(messages):
        ids = apply_chat(tokenizer, messages)
        config = GenerationConfig(max_tokens=args.max_tokens, stop=stops)
        return generate(model, tokenizer, ids, config).text

    result = answer_question(
        index, args.question, generate_fn, k=args.k, mode=args.mode, reranker=_reranker(args)
    )
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(result.answer)
    print()
    for c in result.citations:
        mark = "" if c["cited"] else "  (not cited)"
        print(f"[{c['n']}] {c['heading']}  ({c['id']}){mark}")
    return 0


def run_eval(args) -> int:
    from llmlab.errors import LlmlabError
    from llmlab.rag.evaluate import evaluate, load_eval_set

    index = _open_index(args)
    items = load_eval_set(args.eval_set, args.split)[: args.limit]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    reranker = _reranker(args)
    rows = []
    for mode in modes:
        if mode not in ("bm25", "dense", "hybrid"):
            raise LlmlabError(f"unknown mode {mode!r}; choose among bm25, dense, hybrid")
        rows.append({"mode": mode, **evaluate(index, items, mode)})
        if reranker is not None:
            result = evaluate(index, items, mode, reranker, args.candidates)
            rows.append({"mode": f"{mode}+rerank", **result})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"split {args.split}: {len(items)} questions; index dense = {index.embedder_name}")
    print("| mode | recall@1 | recall@5 | recall@10 | MRR |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | "
            f"{r['recall@10']:.3f} | {r['mrr']:.3f} |"
        )
    sys.stdout.flush()
    return 0
