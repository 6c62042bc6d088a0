"""`llmlab agent run "question"`: the ReAct agent with built-in tools, on our engine or any OpenAI server.

    llmlab agent run "What is 37 * 41?" --tools calculator --constrain --trace out.jsonl
    llmlab agent run "What is 37 * 41?" --tools calculator --scaffold --trace out.jsonl
    llmlab agent run "Sum the squares of 1..10" --tools calculator,python --trace out.jsonl
    llmlab agent run "..." --base-url http://127.0.0.1:8000/v1 --model smollm2 [--native-tools]
    llmlab agent sandbox                        # which isolation the python tool gets here

Prints the answer (or JSON with --json); the JSONL trace records every model reply, action and
observation. `--native-tools` sends OpenAI `tools` and reads `tool_calls` (servers that support
them); otherwise the plain-text Action format is used and parsed — `--constrain` keeps it
parseable with constrained decoding, `--scaffold` prefills "Action:" / "Final Answer:".
"""

from __future__ import annotations

import argparse
import json

from llmlab.commands.common import positive_int


def register(subparsers) -> None:
    from llmlab.cli import common_parser

    agent = subparsers.add_parser("agent", parents=[common_parser()], help="ReAct agent with tools")
    sub = agent.add_subparsers(dest="agent_command", metavar="WHAT")
    sub.required = True
    p = sub.add_parser(
        "run",
        parents=[common_parser()],
        help="answer a question with tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("question")
    p.add_argument("--tools", default="calculator,python", help="calculator,python,notes_search")
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="name/path, or the server's model"
    )
    p.add_argument(
        "--base-url", default="", help="an OpenAI-compatible server (…/v1) instead of our engine"
    )
    p.add_argument("--api-key", default="", help="bearer token for --base-url")
    p.add_argument("--native-tools", action="store_true", help="use OpenAI tools/tool_calls")
    p.add_argument(
        "--scaffold", action="store_true", help="prefill Action:/Final Answer: (small models)"
    )
    p.add_argument(
        "--constrain",
        action="store_true",
        help="constrained decoding of the action format (our engine, or guided_regex on --base-url)",
    )
    p.add_argument("--max-steps", type=positive_int, default=6)
    p.add_argument("--max-tokens", type=positive_int, default=128, help="per model reply")
    p.add_argument("--max-observation-chars", type=positive_int, default=1000)
    p.add_argument(
        "--prompt", default="react", help="agent prompt name (llmlab/prompts/agent/) or a YAML file"
    )
    p.add_argument("--trace", default="", help="write a JSONL trace here")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=run_agent)
    s = sub.add_parser(
        "sandbox", parents=[common_parser()], help="show the sandbox's isolation here"
    )
    s.set_defaults(func=show_sandbox)


def run_agent(args) -> int:
    from dataclasses import asdict

    from llmlab.agents.builtin_tools import default_registry
    from llmlab.agents.chat_models import EngineChat, OpenAIChat
    from llmlab.agents.react import ReActAgent
    from llmlab.errors import LlmlabError

    if args.max_steps < 1:
        raise LlmlabError(f"--max-steps must be at least 1, got {args.max_steps}")
    registry = default_registry([t.strip() for t in args.tools.split(",") if t.strip()])
    if args.base_url:
        chat = OpenAIChat(
            args.base_url,
            args.model,
            api_key=args.api_key or None,
            max_tokens=args.max_tokens,
            native_tools=args.native_tools,
            guided=args.constrain,
        )
    else:
        if args.native_tools:
            raise LlmlabError("--native-tools needs --base-url (a server that speaks OpenAI tools)")
        from llmlab.engine import LLM

        chat = EngineChat(LLM(args.model), max_tokens=args.max_tokens)
    agent = ReActAgent(
        chat,
        registry,
        max_steps=args.max_steps,
        max_observation_chars=args.max_observation_chars,
        prompt=args.prompt,
        trace=args.trace or None,
        scaffold=args.scaffold,
        constrain=args.constrain,
    )
    result = agent.run(args.question)
    if args.json:
        print(json.dumps(asdict(result), indent=2, ensure_ascii=False, default=str))
    else:
        print(
            result.answer
            if result.answer is not None
            else f"(no answer after {args.max_steps} steps)"
        )
    return 0 if result.answer is not None else 2


def show_sandbox(args) -> int:
    from llmlab.agents.sandbox import isolation

    print(isolation().describe())
    return 0
