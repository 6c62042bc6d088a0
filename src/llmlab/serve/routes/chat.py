"""POST /v1/chat/completions: messages through the chat template, answered plain or as SSE
`chat.completion.chunk`s (first chunk carries the role, an optional last one the usage)."""

from __future__ import annotations

import time
from contextlib import aclosing

from fastapi import APIRouter, Request

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError
from llmlab.serve.protocol import ChatCompletionRequest, chat_logprobs, usage
from llmlab.serve.state import ServerState, State
from llmlab.serve.streaming import collect, sse

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State):
    from llmlab.tokenize.tokenizer import apply_chat

    state.check_model(body.model)
    try:
        prompt_ids = apply_chat(state.tokenizer, [m.model_dump() for m in body.messages])
    except LlmlabError as exc:
        raise APIError(400, str(exc), param="messages") from None
    request_id, results = state.submit(
        prompt_ids,
        lambda: body.to_sampling_params(state.default_max_tokens(prompt_ids)),
        "chatcmpl",
    )
    if body.stream:
        return sse(_chat_chunks(state, request_id, body, len(prompt_ids), results))
    final = await collect(results, request)
    choices = [
        {
            "index": o.index,
            "message": {"role": "assistant", "content": o.text},
            "logprobs": chat_logprobs(o.logprobs, state.tokenizer) if body.logprobs else None,
            "finish_reason": o.finish_reason,
        }
        for o in final.outputs
    ]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": usage(len(prompt_ids), final.num_generated_tokens),
    }


async def _chat_chunks(
    state: ServerState, request_id, body: ChatCompletionRequest, prompt_tokens: int, results
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

    yield chunk(
        [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(body.n)
        ]
    )
    final, sent_logprobs = None, [0] * body.n
    async with aclosing(results):  # leaving early (disconnect) closes the stream: abort
        async for final in results:
            for o in final.outputs:
                new_logprobs = o.logprobs[sent_logprobs[o.index] :]
                sent_logprobs[o.index] = len(o.logprobs)
                if o.delta or o.finish_reason:
                    yield chunk(
                        [
                            {
                                "index": o.index,
                                "delta": {"content": o.delta} if o.delta else {},
                                "logprobs": chat_logprobs(new_logprobs, state.tokenizer)
                                if body.logprobs
                                else None,
                                "finish_reason": o.finish_reason,
                            }
                        ]
                    )
    if body.include_usage and final is not None:
        yield chunk([], usage(prompt_tokens, final.num_generated_tokens))
