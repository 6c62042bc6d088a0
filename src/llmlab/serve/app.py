"""The OpenAI-compatible HTTP server (FastAPI): chat and text completions, plain or streamed.

    app = create_app(async_engine, tokenizer, model_name="smollm2-135m-instruct", api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)          # or: llmlab serve --model NAME

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics.
Streams are server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. Errors use
OpenAI's body {"error": {"message", "type", "param", "code"}}. A client that disconnects has its
request aborted, which frees its KV blocks. On shutdown the engine drains in-flight requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmlab.engine.async_engine import AsyncEngine, QueueFullError
from llmlab.errors import ContextLengthError, LlmlabError
from llmlab.serve.metrics import ServerMetrics
from llmlab.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    error_body,
    model_card,
    new_id,
    usage,
)


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None
    ):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


def _error_response(
    status: int, message: str, type_="invalid_request_error", param=None, code=None
):
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


def create_app(
    engine: AsyncEngine,
    tokenizer,
    model_name: str,
    api_key: str | None = None,
    aliases: tuple[str, ...] = (),
) -> FastAPI:
    from llmlab.tokenize.tokenizer import apply_chat

    metrics = ServerMetrics()
    engine.engine.on_token = metrics.observe_token
    served_names = {model_name, *aliases}

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        await asyncio.to_thread(
            engine.stop, True
        )  # uvicorn has stopped accepting: drain, then stop

    app = FastAPI(title="llmlab", lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics

    # ---- errors, auth --------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, exc: RequestValidationError):
        metrics.request_errors_total += 1
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error_response(
                400, f"malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}"
            )
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return _error_response(
            400, f"invalid parameter {param}: {first.get('msg', 'bad value')}", param=param
        )

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        metrics.request_errors_total += 1
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc: StarletteHTTPException):
        return _error_response(
            exc.status_code,
            str(exc.detail),
            "invalid_request_error" if exc.status_code < 500 else "server_error",
        )

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return _error_response(
                    401,
                    "invalid or missing API key (send Authorization: Bearer KEY)",
                    "authentication_error",
                    code="invalid_api_key",
                )
        return await call_next(request)

    def check_model(name: str):
        if name not in served_names:
            raise APIError(
                404,
                f"the model '{name}' does not exist; this server serves '{model_name}'",
                param="model",
                code="model_not_found",
            )

    def submit(prompt_ids: list[int], params_fn, prefix: str):
        metrics.requests_total += 1
        request_id = new_id(prefix)
        try:
            params = params_fn()
            return request_id, engine.submit(request_id, prompt_ids, params)
        except QueueFullError as exc:
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full") from None
        except ContextLengthError as exc:
            raise APIError(
                400,
                str(exc),
                param="messages" if prefix == "chatcmpl" else "prompt",
                code="context_length_exceeded",
            ) from None
        except LlmlabError as exc:
            raise APIError(400, str(exc)) from None

    def default_max_tokens(prompt_ids):
        return max(1, engine.engine.max_seq_tokens - len(prompt_ids))

    # ---- routes --------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_text():
        return PlainTextResponse(
            metrics.render(engine.engine.stats()), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(model_name)]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        try:
            prompt_ids = apply_chat(tokenizer, [m.model_dump() for m in body.messages])
        except LlmlabError as exc:
            raise APIError(400, str(exc), param="messages") from None
        request_id, results = submit(
            prompt_ids, lambda: body.to_sampling_params(default_max_tokens(prompt_ids)), "chatcmpl"
        )
        if body.stream:
            return _sse(_chat_chunks(request_id, body, len(prompt_ids), results))
        final = await _collect(results, request)
        choices = [
            {
                "index": o.index,
                "message": {"role": "assistant", "content": o.text},
                "logprobs": chat_logprobs(o.logprobs, tokenizer) if body.logprobs else None,
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

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        prompts = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in body.prompts()]
        if body.stream and len(prompts) != 1:
            raise APIError(400, "streaming takes exactly one prompt", param="prompt")
        submitted = []
        try:
            for ids in prompts:
                submitted.append((ids, *submit(ids, lambda: body.to_sampling_params(), "cmpl")))
        except APIError:
            for _, request_id, _ in submitted:
                engine.release(request_id)
            raise
        if body.stream:
            ids, request_id, results = submitted[0]
            return _sse(_completion_chunks(request_id, body, len(ids), results))
        finals = await asyncio.gather(*[_collect(results, request) for _, _, results in submitted])
        choices, completion_tokens = [], 0
        for p, final in enumerate(finals):
            completion_tokens += final.num_generated_tokens
            for o in final.outputs:
                choices.append(
                    {
                        "index": p * body.n + o.index,
                        "text": o.text,
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

    # ---- streaming helpers ---------------------------------------------------------------
    async def _chat_chunks(request_id, body: ChatCompletionRequest, prompt_tokens: int, results):
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
                                    "logprobs": chat_logprobs(new_logprobs, tokenizer)
                                    if body.logprobs
                                    else None,
                                    "finish_reason": o.finish_reason,
                                }
                            ]
                        )
        if body.include_usage and final is not None:
            yield chunk([], usage(prompt_tokens, final.num_generated_tokens))

    async def _completion_chunks(request_id, body: CompletionRequest, prompt_tokens: int, results):
        created = int(time.time())
        final = None
        async with aclosing(results):
            async for final in results:
                for o in final.outputs:
                    if o.delta or o.finish_reason:
                        data = {
                            "id": request_id,
                            "object": "text_completion",
                            "created": created,
                            "model": body.model,
                            "choices": [
                                {
                                    "index": o.index,
                                    "text": o.delta,
                                    "logprobs": None,
                                    "finish_reason": o.finish_reason,
                                }
                            ],
                        }
                        if body.include_usage:
                            data["usage"] = None
                        yield data
        if body.include_usage and final is not None:
            yield {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [],
                "usage": usage(prompt_tokens, final.num_generated_tokens),
            }

    return app


def _sse(chunks) -> StreamingResponse:
    """Server-sent events from an async iterator of dicts. If the client goes away, Starlette
    cancels this generator; closing `chunks` closes the engine stream, which aborts the request."""

    async def events():
        try:
            async for data in chunks:
                yield f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        except LlmlabError as exc:
            yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
        finally:
            await chunks.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _collect(results, request: Request):
    """The final RequestOutput; aborts the request if the client disconnects while we wait."""

    async def last():
        final = None
        async with aclosing(results):
            async for final in results:  # noqa: B007 (keeps the last output)
                pass
        return final

    task = asyncio.ensure_future(last())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client disconnected")
        try:
            return task.result()
        except LlmlabError as exc:
            raise APIError(500, str(exc), "server_error") from None
    finally:
        if not task.done():
            task.cancel()
