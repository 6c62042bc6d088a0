"""The OpenAI-compatible HTTP server (FastAPI): chat and text completions, plain or streamed.

    app = create_app(async_engine, tokenizer, model_name="smollm2-135m-instruct", api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)          # or: llmlab serve --model NAME

Routes live in serve/routes/ (chat, completions, models, health+metrics), sharing one
ServerState (serve/state.py); errors are OpenAI's body {"error": {...}} (serve/errors.py);
streams and disconnect handling are in serve/streaming.py. On shutdown the engine drains
in-flight requests.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from llmlab.engine.async_engine import AsyncEngine
from llmlab.serve.defaults import FALLBACK, SamplingDefaults
from llmlab.serve.errors import ApiGate, install_error_handlers
from llmlab.serve.routes import chat, completions, health, models, rag
from llmlab.serve.state import ServerState

log = logging.getLogger("llmlab.serve")

ROUTERS = (chat.router, completions.router, models.router, health.router, rag.router)


def create_app(
    engine: AsyncEngine,
    tokenizer,
    model_name: str,
    api_key: str | None = None,
    aliases: tuple[str, ...] = (),
    sampling_defaults: SamplingDefaults = FALLBACK,
) -> FastAPI:
    """`sampling_defaults` fill the sampling fields a request leaves unset (see serve/defaults.py;
    `llmlab serve` reads them from the model)."""
    state = ServerState(engine, tokenizer, model_name, tuple(aliases), sampling_defaults)
    engine.engine.on_token = state.metrics.observe_token
    log.info("sampling defaults for unset request fields: %s", sampling_defaults.describe())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        # uvicorn has stopped accepting: drain, then stop
        await asyncio.to_thread(engine.stop, True)

    app = FastAPI(title="llmlab", lifespan=lifespan)
    app.state.server = state
    app.state.engine, app.state.metrics = engine, state.metrics  # kept for existing callers
    install_error_handlers(app)
    app.add_middleware(ApiGate, metrics=state.metrics, api_key=api_key)
    for router in ROUTERS:
        app.include_router(router)
    return app
