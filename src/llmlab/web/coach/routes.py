"""The coach's HTTP API, under /v1/coach (so `--api-key` protects it like the OpenAI routes):

    GET  /v1/coach/sections
    POST /v1/coach/next      {"section": null | "基础知识点", "exclude": question id | null}
    POST /v1/coach/grade     {"question_id": ..., "answer": ...}  → score 0–5, points hit/missed,
                             reference answer and analysis, where it is in the notes, next review,
                             and `feedback_messages` for /v1/chat/completions (the page streams the
                             model's feedback with them)
    GET  /v1/coach/progress  per-section mastery

The coach's history is the SQLite file `llmlab coach` also uses (LLMLAB_COACH_DB overrides it)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from llmlab.errors import LlmlabError
from llmlab.serve.errors import APIError

router = APIRouter(prefix="/v1/coach")
_LOCK = threading.Lock()


class NextRequest(BaseModel):
    section: str | None = None
    exclude: str | None = None


class GradeRequest(BaseModel):
    question_id: str = Field(min_length=1)
    answer: str = Field(min_length=1, max_length=20000)


def _coach(app: FastAPI):
    with _LOCK:  # the first requests must not each build a coach
        if getattr(app.state, "coach", None) is None:
            from llmlab.web.coach.coach import Coach

            app.state.coach = Coach()
        return app.state.coach


async def _run(request: Request, work):
    try:
        return await asyncio.to_thread(lambda: work(_coach(request.app)))
    except LlmlabError as exc:
        raise APIError(400, str(exc)) from None


def _question(q) -> dict:
    data = asdict(q)
    data["lines"] = list(q.lines)
    for hidden in ("answer", "analysis"):  # shown after the user has answered
        data.pop(hidden)
    return data


@router.get("/sections")
async def sections(request: Request):
    return {"sections": await _run(request, lambda c: c.sections())}


@router.post("/next")
async def next_question(body: NextRequest, request: Request):
    return _question(await _run(request, lambda c: c.next_question(body.section, body.exclude)))


@router.post("/grade")
async def grade(body: GradeRequest, request: Request):
    from llmlab.web.coach.feedback import feedback_messages

    result = await _run(request, lambda c: c.grade(body.question_id, body.answer))
    return {
        **result.to_dict(),
        "feedback_messages": feedback_messages(result.question, body.answer, result.grade),
    }


@router.get("/progress")
async def progress(request: Request):
    return {"sections": await _run(request, lambda c: c.progress())}
