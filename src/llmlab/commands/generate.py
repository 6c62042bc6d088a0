"""`llmlab generate`: raw text completion (no chat template unless --chat).

llmlab generate "The three primary colors are" --max-tokens 40
llmlab generate --chat --temperature 0.8 --top-p 0.9 --seed 3 "Write a haiku about GPUs"
llmlab generate --chat --json-schema person.json "Describe a made-up person as JSON."
llmlab generate --chat --choice yes --choice no "Is the sky blue? Answer yes or no."
llmlab generate --regex "[0-9]{4}-[0-9]{2}-[0-9]{2}" "Today's date is "
llmlab generate --grammar expr.lark "2 + 2 ="          # a Lark grammar file (llguidance dialect)
llmlab generate --adapter runs/sft-lora-smollm2/adapter "Q: 2+3=? A:"     # a LoRA adapter on top of --model

With --json-schema / --regex / --choice / --grammar the output is constrained to match (the
serving engine's constrained decoding; see docs/structured-output.md).
"""

from __future__ import annotations

import argparse

from llmlab.cli import common_parser
from llmlab.commands.common import (
    add_model_options,
    add_sampling_options,
    generation_config,
    load_model,
    write,
)


def register(subparsers):
    p = subparsers.add_parser(
        "generate",
        parents=[common_parser()],
        help="complete a text prompt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="the text to continue")
    p.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user message in the chat template"
    )
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--no-stream", action="store_true", help="print the whole completion at the end")
    guided = p.add_mutually_exclusive_group()
    guided.add_argument(
        "--json-schema", metavar="FILE", help="constrain the output to this JSON Schema (a file)"
    )
    guided.add_argument(
        "--json-object", action="store_true", help="constrain the output to any JSON object"
    )
    guided.add_argument("--regex", help="constrain the output to match this regular expression")
    guided.add_argument(
        "--choice", action="append", help="the output is one of these strings (repeatable)"
    )
    guided.add_argument("--grammar", metavar="FILE", help="constrain to this Lark grammar (a file)")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run)


def _read(path: str, what: str) -> str:
    from pathlib import Path

    from llmlab.errors import LlmlabError

    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise LlmlabError(f"cannot read the {what} file {path}: {error}") from error


def guided_options(args) -> dict:
    """The SamplingParams constraint the flags ask for ({} when none)."""
    import json

    from llmlab.errors import LlmlabError

    if args.json_schema:
        text = _read(args.json_schema, "--json-schema")
        try:
            return {"json_schema": json.loads(text)}
        except json.JSONDecodeError as error:
            raise LlmlabError(f"{args.json_schema} is not valid JSON: {error}") from error
    if args.json_object:
        return {"json_schema": True}
    if args.regex is not None:
        return {"regex": args.regex}
    if args.choice:
        return {"choice": list(args.choice)}
    if args.grammar:
        return {"grammar": _read(args.grammar, "--grammar")}
    return {}


def _engine_stream(model, tokenizer, prompt_ids, config, guided: dict):
    """Text pieces from the serving engine, which applies the grammar mask each step."""
    from llmlab.engine import LLMEngine, SamplingParams

    params = SamplingParams(
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        repetition_penalty=config.repetition_penalty,
        seed=config.seed,
        stop=list(config.stop),
        **guided,
    )
    engine = LLMEngine(model, tokenizer, max_num_seqs=1, kv_memory="64MiB")
    engine.add_request("generate", prompt_ids, params)
    while engine.has_unfinished():
        for out in engine.step():
            yield out.outputs[0].delta


def run(args) -> int:
    from llmlab.errors import LlmlabError
    from llmlab.generation import stream
    from llmlab.tokenize.tokenizer import apply_chat

    if not args.prompt.strip():
        raise LlmlabError("the prompt is empty")
    config = generation_config(args)
    guided = guided_options(args)
    model, tokenizer = load_model(args, "generate text")
    if args.chat:
        prompt_ids = apply_chat(
            tokenizer, [{"role": "user", "content": args.prompt}], system=args.system
        )
    else:
        prompt_ids = tokenizer.encode(args.prompt)
    if guided:
        pieces = _engine_stream(model, tokenizer, prompt_ids, config, guided)
    else:
        pieces = stream(model, tokenizer, prompt_ids, config)
    if args.no_stream:
        write("".join(pieces))
    else:
        for piece in pieces:
            write(piece)
    write("\n")
    return 0
