"""`llmlab chat`: talk to a model.

llmlab chat "What is dropout?"                       # one answer, streamed, then exit
llmlab chat --system "Answer in one sentence."       # interactive: history kept; /reset, /exit
llmlab chat --model path/to/model.gguf --temperature 0.7 --seed 1
llmlab chat --adapter runs/sft-lora-smollm2/adapter "Hi"     # a LoRA adapter on top of --model

Interactive: an error (say, a message longer than the context) is printed and the session goes
on; when the history outgrows the model's context the oldest turns are dropped, with a note; Ctrl-C
stops the answer being written (the part shown stays in the history), Ctrl-D or /exit quits.
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
from llmlab.errors import LlmlabError

HELP = "/reset clears the history, /exit or Ctrl-D quits, Ctrl-C stops an answer"


def register(subparsers):
    p = subparsers.add_parser(
        "chat",
        parents=[common_parser()],
        help="chat with a model (one-shot or interactive)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "prompt", nargs="?", help="ask this once and exit; omit for an interactive session"
    )
    p.add_argument("--system", default=None, help="system prompt")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(func=run, repetition_penalty=1.1)


class Conversation:
    """The history, and the prompt ids for the next answer trimmed to fit the context."""

    def __init__(self, tokenizer, context: int, max_tokens: int, system: str | None):
        self.tokenizer, self.context, self.system = tokenizer, context, system
        # Room kept for the answer: what was asked for, but never more than half the context.
        self.room = min(max_tokens, context // 2)
        self.messages: list[dict] = []

    def prompt_ids(self, user_text: str) -> tuple[list[int], int]:
        """(prompt ids with the new message, number of earlier turns dropped to make it fit)."""
        from llmlab.tokenize.tokenizer import apply_chat

        dropped = 0
        while True:
            messages = [*self.messages, {"role": "user", "content": user_text}]
            ids = apply_chat(self.tokenizer, messages, system=self.system)
            if len(ids) + self.room <= self.context:
                break
            if not self.messages:
                if len(ids) < self.context:  # fits without the full answer room: a shorter answer
                    break
                raise LlmlabError(
                    f"this message is {len(ids)} tokens with the chat frame; the model's context "
                    f"is {self.context} tokens — send a shorter one"
                )
            del self.messages[:2]  # the oldest user turn and its answer
            dropped += 1
        return ids, dropped

    def add_turn(self, user_text: str, reply: str):
        self.messages += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": reply},
        ]


def run(args) -> int:
    from llmlab.generation import stream

    config = generation_config(args)
    if args.prompt is not None and not args.prompt.strip():
        raise LlmlabError("the prompt is empty")
    model, tokenizer = load_model(args, "chat")
    # A base model's question/answer frame ends an answer at the next "Question:" (tokenizer.py).
    config.stop += [s for s in getattr(tokenizer, "chat_stop_strings", []) if s not in config.stop]
    chat = Conversation(tokenizer, model.max_context, config.max_tokens, args.system)

    def answer(user_text: str):
        ids, dropped = chat.prompt_ids(user_text)
        if dropped:
            print(
                f"(history trimmed: the {dropped} oldest turn{'s' * (dropped > 1)} dropped to fit "
                f"the model's context of {chat.context} tokens)",
                flush=True,
            )
        pieces: list[str] = []
        try:
            for piece in stream(model, tokenizer, ids, config):
                write(piece)
                pieces.append(piece)
        finally:
            write("\n")
            chat.add_turn(user_text, "".join(pieces))  # a stopped answer keeps what was shown

    if args.prompt is not None:
        answer(args.prompt)
        return 0
    print(f"chatting with {args.model}; {HELP}", flush=True)
    while True:
        try:
            user_text = input("you> ").strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print(f"\n({HELP})", flush=True)
            continue
        if user_text in ("/exit", "/quit"):
            return 0
        if user_text == "/reset":
            chat.messages.clear()
            print("(history cleared)", flush=True)
            continue
        if not user_text:
            continue
        write("bot> ")
        try:
            answer(user_text)
        except KeyboardInterrupt:
            print("(answer stopped)", flush=True)
        except Exception as exc:  # the session goes on; a message that failed is not kept
            if getattr(args, "debug", False):
                raise
            print(f"error: {error_line(exc)}", flush=True)


def error_line(exc: Exception) -> str:
    if isinstance(exc, LlmlabError):
        return str(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"
