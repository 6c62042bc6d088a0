"""Turning the engine's per-request output iterators into responses: server-sent events for
streams, the final output for plain requests. Both abort the request when the client goes away.

    return sse(chunks)                          # async iterator of dicts → text/event-stream
    final = await collect(results, request)    # last RequestOutput (APIError 499 on disconnect)
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import StreamingResponse

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError
from llmlab.serve.protocol import error_body


def sse(chunks) -> StreamingResponse:
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


async def collect(results, request: Request):
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
