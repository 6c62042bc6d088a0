"""`llmlab chat`: talk to a model.

llmlab chat "What is dropout?"                       # one answer, streamed, then exit
llmlab chat --system "Answer in one sentence."       # interactive: history kept; /reset, /exit
llmlab chat --model path/to/model.gguf --temperature 0.7 --seed 1
"""

from __future__ import annotations

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
        "chat",
        parents=[common_parser()],
        help="chat with a model (one-shot or interactive)",
        description=__doc__,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="?", help="ask this once and exit; omit for an interactive session"
    )
    p.add_argument("--system", default=None, help="system prompt")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run, repetition_penalty=1.1)


def run(args) -> int:
    from llmlab.generation import stream
    from llmlab.tokenize.tokenizer import apply_chat

    config = generation_config(args)
    model, tokenizer = load_model(args)
    messages: list[dict] = []

    def answer(user_text: str):
        messages.append({"role": "user", "content": user_text})
        prompt_ids = apply_chat(tokenizer, messages, system=args.system)
        reply = "".join(
            write(piece) or piece for piece in stream(model, tokenizer, prompt_ids, config)
        )
        write("\n")
        messages.append({"role": "assistant", "content": reply})

    if args.prompt is not None:
        if not args.prompt.strip():
            from llmlab.errors import LlmlabError

            raise LlmlabError("the prompt is empty")
        answer(args.prompt)
        return 0
    print(f"chatting with {args.model}; /reset clears the history, /exit or Ctrl-D quits")
    while True:
        try:
            user_text = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if user_text in ("/exit", "/quit"):
            return 0
        if user_text == "/reset":
            messages.clear()
            continue
        if user_text:
            write("bot> ")
            answer(user_text)
