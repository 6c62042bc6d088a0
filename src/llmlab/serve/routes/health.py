"""GET /health (liveness) and GET /metrics (Prometheus text); neither needs the API key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from llmlab.serve.state import State

router = APIRouter()


@router.get("/health")
async def health():
    return {"status": "ok"}


@router.get("/metrics")
async def metrics_text(state: State):
    return PlainTextResponse(
        state.metrics.render(state.engine.engine.stats()),
        media_type="text/plain; version=0.0.4",
    )
