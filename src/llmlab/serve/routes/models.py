"""GET /v1/models: the served model's card."""

from __future__ import annotations

from fastapi import APIRouter

from llmlab.serve.protocol import model_card
from llmlab.serve.state import State

router = APIRouter()


@router.get("/v1/models")
async def models(state: State):
    return {"object": "list", "data": [model_card(state.model_name)]}
