"""OpenAI-format errors for the server: the APIError a route raises, and the handlers that turn
every error (validation, HTTP, ours) into {"error": {"message", "type", "param", "code"}}.

    raise APIError(400, "the model 'x' does not exist", param="model", code="model_not_found")
    install_error_handlers(app, metrics)       # once, in create_app
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmlab.serve.metrics import ServerMetrics
from llmlab.serve.protocol import error_body


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


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, exc: RequestValidationError):
        metrics.request_errors_total += 1
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return error_response(
                400, f"malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}"
            )
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return error_response(
            400, f"invalid parameter {param}: {first.get('msg', 'bad value')}", param=param
        )

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        metrics.request_errors_total += 1
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc: StarletteHTTPException):
        return error_response(
            exc.status_code,
            str(exc.detail),
            "invalid_request_error" if exc.status_code < 500 else "server_error",
        )


def install_api_key_check(app: FastAPI, api_key: str | None) -> None:
    """Require `Authorization: Bearer KEY` on /v1/*; /health and /metrics stay open."""

    @app.middleware("http")
    async def check_api_key(request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return error_response(
                    401,
                    "invalid or missing API key (send Authorization: Bearer KEY)",
                    "authentication_error",
                    code="invalid_api_key",
                )
        return await call_next(request)
