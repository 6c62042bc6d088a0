"""Routes for the pages: `/` (chat) and `/static/*`. The pages call the OpenAI API of the same
server (`/v1/chat/completions`, `/v1/models`), so an API key protects them exactly as it protects
any client: the page asks for the key once and keeps it in the browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_web(app: FastAPI) -> FastAPI:
    """Add the pages to an app made by `serve.app.create_app`."""

    @app.get("/", include_in_schema=False)
    async def chat_page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
