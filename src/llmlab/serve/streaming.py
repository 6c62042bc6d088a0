"""Turning the engine's per-request output iterators into responses: server-sent events for
streams, the final output for plain requests. Both abort the request when the client goes away,
which frees its KV blocks.

    return sse(chunks, metrics)                # async iterator of dicts → text/event-stream
    [final] = await collect([results], request)   # last outputs (APIError 499 on disconnect)
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import StreamingResponse

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError
from llmlab.serve.protocol import error_body

log = logging.getLogger("llmlab.serve")


def sse(chunks, metrics=None) -> StreamingResponse:
    """Server-sent events from an async iterator of dicts. If the client goes away, Starlette
    cancels this generator; closing `chunks` closes the engine stream, which aborts the request.
    An error after the 200 went out ends the stream with an OpenAI error event (counted)."""

    async def events():
        try:
            async for data in chunks:
                yield f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - the status is sent: report in-band
            if not isinstance(exc, LlmlabError):
                log.exception("stream failed")
            if metrics is not None:
                metrics.request_errors_total += 1
            yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
        finally:
            await chunks.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _disconnected(request: Request):
    """Returns when the client goes away. The body has been read by now, so the next ASGI
    message is `http.disconnect` (polling `is_disconnected()` can miss it)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def collect(results_list: list, request: Request) -> list:
    """The final RequestOutput of each iterator, in order; if the client disconnects while we
    wait, every one of them is aborted (their KV blocks freed) and APIError 499 is raised."""

    async def last(results):
        final = None
        async with aclosing(results):  # closing early (cancelled) aborts the request
            async for final in results:  # noqa: B007 (keeps the last output)
                pass
        return final

    tasks = [asyncio.ensure_future(last(r)) for r in results_list]
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        remaining = set(tasks)
        while remaining:
            done, _ = await asyncio.wait(remaining | {gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                raise APIError(499, "client disconnected")
            for task in done:
                remaining.discard(task)
                if isinstance(task.exception(), LlmlabError):
                    raise APIError(500, str(task.exception()), "server_error")
                task.result()  # any other exception: a server bug, answered 500 and logged
        return [task.result() for task in tasks]
    finally:  # on disconnect, error or cancellation: abort whatever still runs
        for task in (*tasks, gone):
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
