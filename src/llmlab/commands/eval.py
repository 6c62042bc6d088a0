"""`llmlab eval`: measure a model. Subcommands: `perplexity`, `assistant`.

    llmlab eval perplexity --model smollm2-135m-instruct --data bundled:stories-en.txt --split heldout
    llmlab eval perplexity --model runs/smollm2-gptq4 --data notes.txt --window 512 --stride 256 --json
    llmlab eval assistant --model gemma3-270m --adapter bundled:notes-gemma3 --out runs/eval-assistant.json
    llmlab eval assistant --no-rag --max-tokens 96 --json          # base only, without passages

Perplexity is sliding-window (each token scored once, with up to window − stride tokens of
context; --stride = --window gives disjoint chunks); tokens/s is scored tokens over wall time.
--split heldout takes the last 10 % of the file's lines (the part `llmlab quantize` never
calibrates on), train the first 90 %, all the whole file.

`assistant` asks the notes assistant the questions of an instruction-data split (default: the test
split of `llmlab data run recipes/notes-instruct.yaml`'s output) — the base model, and the base +
--adapter when given, both in one run with the same prompts — with retrieved passages (--rag), without
(--no-rag), or both (default); greedy, at most --max-tokens new tokens. It prints key-point recall,
faithfulness, the answer-language rate and a blind pairwise comparison (definitions in
docs/post-training.md); --out writes every answer.
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import non_negative_int, positive_int, probability


def register(subparsers):
    p = subparsers.add_parser(
        "eval",
        parents=[common_parser()],
        help="evaluate a model (perplexity, …)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="eval_command", metavar="EVAL")
    sub.required = True
    ppl = sub.add_parser(
        "perplexity",
        parents=[common_parser()],
        help="sliding-window perplexity of a causal LM on a text file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ppl.add_argument("--model", required=True, help="packaged name, HF/quantized folder or .gguf")
    ppl.add_argument("--data", required=True, help="text file: bundled:NAME or a path")
    ppl.add_argument("--split", default="all", choices=["all", "train", "heldout"])
    ppl.add_argument(
        "--window", type=positive_int, default=512, help="tokens per window (default 512)"
    )
    ppl.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="tokens between windows (default window/2)",
    )
    ppl.add_argument(
        "--max-tokens", type=positive_int, default=None, help="score only the first N tokens"
    )
    ppl.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    ppl.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    ppl.add_argument("--json", action="store_true", help="print one JSON object")
    ppl.set_defaults(func=run_perplexity)

    asst = sub.add_parser(
        "assistant",
        parents=[common_parser()],
        help="the notes assistant: base vs SFT, with and without retrieved passages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    asst.add_argument("--model", default="gemma3-270m", help="base model (default gemma3-270m)")
    asst.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="the SFT LoRA adapter: a folder or bundled:NAME (bundled:notes-gemma3)",
    )
    asst.add_argument(
        "--data",
        default="runs/notes-instruct/notes-instruct.jsonl",
        help="instruction-data jsonl with a split field (default: the notes-instruct recipe's output)",
    )
    asst.add_argument(
        "--split",
        default="test",
        help="test (default), dev, train, several comma-separated (dev,test) or all",
    )
    asst.add_argument(
        "--rag",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only with (--rag) or only without (--no-rag) retrieved passages (default: both)",
    )
    asst.add_argument("--index", default=None, help="a `llmlab rag index --out` folder")
    asst.add_argument("--k", type=positive_int, default=3, help="passages given (default 3)")
    asst.add_argument(
        "--max-tokens", type=positive_int, default=160, help="most new tokens (default 160)"
    )
    asst.add_argument(
        "--support",
        type=probability,
        default=0.5,
        help="share of a sentence's words in the passage for it to be supported (default 0.5)",
    )
    asst.add_argument("--seed", type=int, default=0, help="seed of the pairwise order")
    asst.add_argument("--limit", type=positive_int, default=None, help="only the first N questions")
    asst.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    asst.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    asst.add_argument("--json", action="store_true", help="print the whole report as JSON")
    asst.add_argument("--out", default=None, help="also write the report (every answer) here")
    asst.add_argument(
        "--reuse",
        default=None,
        metavar="REPORT",
        help="take the base model's answers from an earlier --out report made with the same "
        "model, --k, --max-tokens and --dtype (the SFT model is always asked afresh)",
    )
    asst.add_argument(
        "--examples",
        type=non_negative_int,
        default=0,
        help="also print N answers side by side as a Markdown table (default 0)",
    )
    asst.set_defaults(func=run_assistant)


def run_perplexity(args) -> int:
    import json
    from dataclasses import asdict

    import llmlab
    from llmlab.device import set_threads
    from llmlab.errors import LlmlabError
    from llmlab.quant.perplexity import perplexity
    from llmlab.quant.text_data import split_text

    if args.window < 2:
        raise LlmlabError(f"--window must be at least 2, got {args.window}")
    text = split_text(args.data, args.split)  # fails fast on a missing file, before loading
    set_threads(args.threads)
    model, tokenizer = llmlab.load(args.model, device="cpu", dtype=args.dtype)
    result = perplexity(model, tokenizer, text, args.window, args.stride, args.max_tokens)
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "data": args.data, "split": args.split, **asdict(result)}
            )
        )
    else:
        print(
            f"perplexity {result.perplexity:.3f} over {result.tokens} tokens "
            f"(window {result.window}, stride {result.stride}) at {result.tokens_per_s:.1f} tokens/s"
        )
    return 0


def run_assistant(args) -> int:
    import json
    import os
    from pathlib import Path

    from llmlab.device import set_threads
    from llmlab.errors import LlmlabError
    from llmlab.posttrain.assistant_eval import (
        evaluate,
        format_examples,
        format_table,
        load_items,
    )

    items = load_items(args.data, args.split)[: args.limit]  # a bad file fails before loading
    conditions = {None: ("no-rag", "rag"), True: ("rag",), False: ("no-rag",)}[args.rag]
    if args.adapter:  # fail before the base model is loaded and asked
        from llmlab.formats.peft import is_adapter_folder
        from llmlab.loading import adapter_folder

        if not is_adapter_folder(adapter_folder(args.adapter)):
            raise LlmlabError(
                f"--adapter {args.adapter}: not a LoRA adapter folder (needs adapter_config.json)"
            )
    reuse = None
    if args.reuse:
        try:
            reuse = json.loads(Path(args.reuse).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LlmlabError(f"--reuse {args.reuse}: not a readable report ({error})") from None
    index = None
    if "rag" in conditions:
        from llmlab.rag import Index, default_index

        index = Index.load(args.index) if args.index else default_index()
    set_threads(args.threads)
    report = evaluate(
        items,
        args.model,
        adapter=args.adapter,
        index=index,
        conditions=conditions,
        k=args.k,
        max_tokens=args.max_tokens,
        threshold=args.support,
        seed=args.seed,
        dtype=args.dtype,
        reuse=reuse,
    )
    report.update(data=args.data, split=args.split)
    if args.out:  # written whole, then renamed: a failed run never leaves half a report
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        reused = report["reused_base_answers"]
        print(
            f"{report['questions']} questions of {args.data} (split {args.split})"
            + (f"; {reused} base answers reused from {args.reuse}" if reused else "")
        )
        print(format_table(report))
        if args.examples:
            print()
            print(format_examples(report, args.examples))
    return 0
