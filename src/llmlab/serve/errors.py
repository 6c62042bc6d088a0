"""OpenAI-format errors for the server: the APIError a route raises, the handlers that turn every
error (bad JSON, validation, HTTP, ours, and any unexpected exception) into
{"error": {"message", "type", "param", "code"}}, and the ASGI middleware that checks the API key
and counts requests and errors for /metrics.

    raise APIError(400, "the model 'x' does not exist", param="model", code="model_not_found")
    install_error_handlers(app)                # once, in create_app
    app.add_middleware(ApiGate, metrics=metrics, api_key="secret")

Client errors (4xx) are answered without a traceback in the log; only an unexpected exception
(a server bug: 500) is logged with its traceback.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmlab.serve.metrics import ServerMetrics
from llmlab.serve.protocol import error_body

log = logging.getLogger("llmlab.serve")


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None
    ):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type_, param, code)


def error_response(
    status: int, message: str, type_="invalid_request_error", param=None, code=None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status)


async def _body_problem(request: Request) -> str | None:
    """Why the body is not a JSON object, or None if it is one."""
    raw = await request.body()
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"request body is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return f"request body must be a JSON object, got {type(value).__name__}"
    return None


def _validation_message(error: dict) -> tuple[str, str | None]:
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if error.get("type") == "extra_forbidden":
        return f"unsupported parameter {param}: this server does not implement it", param
    if error.get("type") == "missing":
        return f"missing required parameter {param}", param
    msg = error.get("msg", "bad value").removeprefix("Value error, ")
    return f"invalid parameter {param}: {msg}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        problem = await _body_problem(request)
        if problem is not None:
            return error_response(400, problem)
        errors = exc.errors()
        # an unsupported field is the most useful thing to name when several are wrong
        first = next((e for e in errors if e.get("type") == "extra_forbidden"), None)
        message, param = _validation_message(first or (errors[0] if errors else {}))
        return error_response(400, message, param=param)

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc: StarletteHTTPException):
        return error_response(
            exc.status_code,
            str(exc.detail),
            "invalid_request_error" if exc.status_code < 500 else "server_error",
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request, exc: Exception):
        # Starlette re-raises after this response, so uvicorn logs the traceback: a server bug.
        return error_response(
            500, f"internal server error: {type(exc).__name__}: {exc}", "server_error"
        )


class ApiGate:
    """Pure ASGI middleware (BaseHTTPMiddleware would hide client disconnects from the routes):
    counts /v1/* requests and those answered with an error, and requires the API key there."""

    def __init__(self, app, metrics: ServerMetrics, api_key: str | None = None):
        self.app, self.metrics, self.api_key = app, metrics, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        self.metrics.requests_total += 1
        status = {}

        async def send_and_watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if message["status"] >= 400:
                    self.metrics.request_errors_total += 1
            await send(message)

        if self.api_key:
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"") != f"Bearer {self.api_key}".encode():
                response = error_response(
                    401,
                    "invalid or missing API key (send Authorization: Bearer KEY)",
                    "authentication_error",
                    code="invalid_api_key",
                )
                return await response(scope, receive, send_and_watch)
        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            if "code" not in status:  # the outer error middleware answers 500 after us
                self.metrics.request_errors_total += 1
            raise
