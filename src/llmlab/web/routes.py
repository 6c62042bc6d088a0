"""Routes for the pages: `/` (chat), `/notes` (the notes browser; `/notes/source` is the
repaired notes as Markdown), `/coach` (the interview coach, with its API under /v1/coach — see
web/coach/routes.py) and `/static/*`. The pages call the OpenAI API of the same
server (`/v1/chat/completions`, `/v1/models`), so an API key protects them exactly as it protects
any client: the page asks for the key once and keeps it in the browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_web(app: FastAPI) -> FastAPI:
    """Add the pages to an app made by `serve.app.create_app`."""

    @app.get("/", include_in_schema=False)
    async def chat_page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/notes", include_in_schema=False)
    async def notes_page():
        return FileResponse(STATIC / "notes.html", media_type="text/html; charset=utf-8")

    @app.get("/notes/source", include_in_schema=False)
    async def notes_source():
        from llmlab.rag.store import read_document

        text, _ = read_document()
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    @app.get("/coach", include_in_schema=False)
    async def coach_page():
        return FileResponse(STATIC / "coach.html", media_type="text/html; charset=utf-8")

    from llmlab.web.coach.routes import router as coach_router

    app.include_router(coach_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
