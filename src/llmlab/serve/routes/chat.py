"""POST /v1/chat/completions: messages through the chat template, answered plain or as SSE
`chat.completion.chunk`s (first chunk carries the role, an optional last one the usage).

Structured output: `response_format` (json_object / json_schema) and the guided_* extras become a
constraint on the engine's sampling; `tools` with `tool_choice` become a grammar over tool calls,
whose output is parsed back into `tool_calls` — whole, or streamed as `delta.tool_calls` (id and
name first, then argument fragments, by index). See serve/tools.py and docs/structured-output.md.
"""

from __future__ import annotations

import time
from contextlib import aclosing

from fastapi import APIRouter, Request

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError
from llmlab.serve.protocol import ChatCompletionRequest, chat_logprobs, usage
from llmlab.serve.routes import rag
from llmlab.serve.state import ServerState, State
from llmlab.serve.streaming import collect, sse
from llmlab.serve.tools import (
    ToolCallParser,
    check_tools,
    openai_tool_calls,
    render_prompt,
    request_constraint,
)

router = APIRouter()


def _prepare(body: ChatCompletionRequest, tokenizer) -> tuple[list[int], dict]:
    """(prompt ids, SamplingParams constraint fields); LlmlabError → 400 naming the problem."""
    tools = [t.model_dump() for t in body.tools or []]
    mode = body.tool_mode
    if tools or mode not in (None, "auto"):
        check_tools(tools, mode)
    constraint = request_constraint(
        tools, mode, body.parallel_tool_calls, body.response_schema(), body.guided()
    )
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    return render_prompt(tokenizer, messages, tools), constraint


def _calls_expected(body: ChatCompletionRequest) -> bool:
    return bool(body.tools) and body.tool_mode is not None


def _finish_reason(reason: str | None, parser: ToolCallParser | None) -> str | None:
    if reason == "stop" and parser is not None and parser.calls:
        return "tool_calls"
    return reason


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State):
    state.check_model(body.model)
    hits = None
    if body.rag:  # llmlab's extension: answer from retrieved passages, with citations
        body, hits = await rag.with_retrieval(body, request)
    state.check_supported(body)
    try:
        prompt_ids, constraint = _prepare(body, state.tokenizer)
    except LlmlabError as exc:
        raise APIError(400, str(exc)) from None
    # A base model's question/answer frame (tokenize/tokenizer.py) ends an answer at these.
    stop_extra = getattr(state.tokenizer, "chat_stop_strings", [])
    request_id, results = state.submit(
        prompt_ids, body, "chatcmpl", constraint=constraint, stop_extra=stop_extra
    )
    if body.stream:
        chunks = _chat_chunks(state, request_id, body, len(prompt_ids), results, hits)
        return sse(chunks, state.metrics)
    [final] = await collect([results], request)
    choices = []
    for o in final.outputs:
        message = {"role": "assistant", "content": o.text}
        parser = None
        if _calls_expected(body):
            parser = ToolCallParser(tool_mode=body.tool_mode != "auto")
            parser.feed(o.text)
            if parser.calls:
                message = {
                    "role": "assistant",
                    "content": parser.content or None,
                    "tool_calls": openai_tool_calls(parser.calls),
                }
        choices.append(
            {
                "index": o.index,
                "message": message,
                "logprobs": chat_logprobs(o.logprobs, state.tokenizer) if body.logprobs else None,
                "finish_reason": _finish_reason(o.finish_reason, parser),
            }
        )
    response = {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": usage(len(prompt_ids), final.num_generated_tokens),
    }
    if hits is not None:
        response["citations"] = rag.citations(choices[0]["message"].get("content"), hits)
    return response


def _delta(event: tuple) -> dict:
    """A parser event as a chat chunk delta."""
    if event[0] == "content":
        return {"content": event[1]}
    if event[0] == "call":
        _, index, call_id, name = event
        return {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
    _, index, fragment = event
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


async def _chat_chunks(
    state: ServerState,
    request_id,
    body: ChatCompletionRequest,
    prompt_tokens: int,
    results,
    hits=None,
):
    created = int(time.time())

    def chunk(choices, usage_value=None):
        data = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": choices,
        }
        if body.include_usage:
            data["usage"] = usage_value
        return data

    def choice(index, delta, logprobs, finish_reason=None):
        return {
            "index": index,
            "delta": delta,
            "logprobs": chat_logprobs(logprobs, state.tokenizer) if body.logprobs else None,
            "finish_reason": finish_reason,
        }

    first = chunk([choice(i, {"role": "assistant", "content": ""}, []) for i in range(body.n)])
    if hits is not None:
        first["citations"] = rag.citations(None, hits)
    yield first
    parsers = [
        ToolCallParser(tool_mode=body.tool_mode != "auto") if _calls_expected(body) else None
        for _ in range(body.n)
    ]
    final, sent_logprobs = None, [0] * body.n
    async with aclosing(results):  # leaving early (disconnect) closes the stream: abort
        async for final in results:
            for o in final.outputs:
                parser = parsers[o.index]
                if parser is None:
                    events = [("content", o.delta)] if o.delta else []
                else:
                    events = parser.feed(o.delta) if o.delta else []
                finish = _finish_reason(o.finish_reason, parser)
                if not events and not finish:
                    continue  # a tool-call prefix still buffered: its logprobs go with the next
                new_logprobs = o.logprobs[sent_logprobs[o.index] :]
                sent_logprobs[o.index] = len(o.logprobs)
                for n, event in enumerate(events):
                    last = n == len(events) - 1
                    yield chunk(
                        [
                            choice(
                                o.index,
                                _delta(event),
                                new_logprobs if n == 0 else [],
                                finish if last else None,
                            )
                        ]
                    )
                if not events:
                    yield chunk([choice(o.index, {}, new_logprobs, finish)])
    if body.include_usage and final is not None:
        yield chunk([], usage(prompt_tokens, final.num_generated_tokens))
