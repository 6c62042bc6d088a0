"""POST /v1/completions: text or token-id prompts (several at once when not streaming), answered
plain or as SSE `text_completion` chunks. `echo: true` puts the prompt's text before each choice's
text (streamed: as the first chunk of each choice)."""

from __future__ import annotations

import time
from contextlib import aclosing

from fastapi import APIRouter, Request

from llmlab.serve.errors import APIError
from llmlab.serve.protocol import CompletionRequest, completion_logprobs, usage
from llmlab.serve.state import COMPLETIONS_DEFAULT_MAX_TOKENS, State
from llmlab.serve.streaming import collect, sse

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: State):
    state.check_model(body.model)
    state.check_supported(body)
    tokenizer = state.tokenizer
    prompts = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in body.prompts()]
    if body.stream and len(prompts) != 1:
        raise APIError(400, "streaming takes exactly one prompt", param="prompt")
    for ids in prompts:
        state.check_token_ids(ids, "prompt")
    echoes = [_echo_text(p, tokenizer) if body.echo else "" for p in body.prompts()]
    submitted = []
    try:
        for ids in prompts:
            submitted.append(
                (ids, *state.submit(ids, body, "cmpl", COMPLETIONS_DEFAULT_MAX_TOKENS))
            )
    except APIError:
        for _, request_id, _ in submitted:
            state.engine.release(request_id)
        raise
    if body.stream:
        ids, request_id, results = submitted[0]
        chunks = _completion_chunks(request_id, body, len(ids), results, echoes[0])
        return sse(chunks, state.metrics)
    finals = await collect([results for _, _, results in submitted], request)
    choices, completion_tokens = [], 0
    for p, final in enumerate(finals):
        completion_tokens += final.num_generated_tokens
        for o in final.outputs:
            choices.append(
                {
                    "index": p * body.n + o.index,
                    "text": echoes[p] + o.text,
                    "finish_reason": o.finish_reason,
                    "logprobs": completion_logprobs(o.logprobs, tokenizer)
                    if body.logprobs is not None
                    else None,
                }
            )
    return {
        "id": submitted[0][1],
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": usage(sum(len(s[0]) for s in submitted), completion_tokens),
    }


def _echo_text(prompt, tokenizer) -> str:
    return prompt if isinstance(prompt, str) else tokenizer.decode(list(prompt))


async def _completion_chunks(
    request_id, body: CompletionRequest, prompt_tokens: int, results, echo: str = ""
):
    created = int(time.time())
    final = None

    def chunk(index, text, finish_reason=None):
        data = {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if body.include_usage:
            data["usage"] = None
        return data

    if echo:
        for index in range(body.n):
            yield chunk(index, echo)
    async with aclosing(results):
        async for final in results:
            for o in final.outputs:
                if o.delta or o.finish_reason:
                    yield chunk(o.index, o.delta, o.finish_reason)
    if body.include_usage and final is not None:
        yield {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [],
            "usage": usage(prompt_tokens, final.num_generated_tokens),
        }
