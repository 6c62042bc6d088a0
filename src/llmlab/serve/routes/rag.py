"""Retrieval over the notes: POST /v1/rag/search, and the `"rag": true` chat extension.

    curl localhost:8000/v1/rag/search -d '{"query": "为什么要做归一化", "k": 5}'
    → {"object": "list", "data": [{"id", "heading", "score", "text", "lines"}, …]}

A chat request with `"rag": true` (llmlab's extension; `rag_k` passages, default 3) has its last
user message answered from retrieved passages: they are put in the prompt numbered [1]…[k], and
the response carries `citations` — for each passage its number, id, heading and whether the
answer cites it (streamed responses carry them on the first chunk, before the answer exists,
so without `cited`). The index is the bundled notes' default index unless the app was given one
(`app.state.rag_index`), loaded on first use off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError

router = APIRouter()
_LOCK = threading.Lock()


class RagSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400 naming it

    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=50)
    mode: Literal["bm25", "dense", "hybrid"] = "hybrid"


def _index(app):
    with _LOCK:  # two first requests must not both build the index
        if getattr(app.state, "rag_index", None) is None:
            from llmlab.rag import default_index

            app.state.rag_index = default_index()
        return app.state.rag_index


async def search(request: Request, query: str, k: int, mode: str = "hybrid"):
    def run():
        return _index(request.app).search(query, k=k, mode=mode)

    try:
        return await asyncio.to_thread(run)
    except LlmlabError as exc:
        raise APIError(400, str(exc), param="query") from None


@router.post("/v1/rag/search")
async def rag_search(body: RagSearchRequest, request: Request):
    hits = await search(request, body.query, body.k, body.mode)
    return {"object": "list", "data": [h.to_dict() for h in hits]}


async def with_retrieval(body, request: Request):
    """(the request with retrieved passages in its prompt, the passages) for `"rag": true`."""
    from llmlab.rag.answer import build_messages

    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    question = messages[last_user].get("content") if last_user is not None else None
    if not isinstance(question, str) or not question.strip():
        raise APIError(400, '"rag": true needs a last user message with text', param="messages")
    hits = await search(request, question, body.rag_k)
    history = [m for i, m in enumerate(messages) if i != last_user and m["role"] != "system"]
    rebuilt = build_messages(question, hits, history=history)
    return body.model_copy(
        update={"messages": [type(body.messages[0])(**m) for m in rebuilt]}
    ), hits


def citations(text: str | None, hits) -> list[dict]:
    """The citation list of an answer (text None: before the answer exists, no `cited`)."""
    from llmlab.rag.answer import citations as cite

    found = cite(text or "", hits)
    if text is None:
        for c in found:
            c.pop("cited")
    return found
