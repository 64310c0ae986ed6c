"""OpenAI-style error responses and the exception handlers that produce them.

Every error, including FastAPI's request validation (422 by default, 400 here, with the reason),
unknown routes and unexpected exceptions, answers ``{"error": {"message", "type", "param",
"code"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api.limits import BodyTooLarge
from serving.api.responses import error_body
from serving.service import GenerationFailed, GenerationTimeout, Rejected

__all__ = ["GENERATION_PATHS", "error_response", "install_error_handlers", "validation_message"]

_log = logging.getLogger(__name__)

# Requests to these paths are counted in <prefix>_requests_total, also when their body is invalid.
GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_response(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in OpenAI's shape."""
    type_ = _TYPES.get(
        status_code, "server_error" if status_code >= 500 else "invalid_request_error"
    )
    body = error_body(message, type_=type_, param=param, code=code)
    return JSONResponse(body, status_code=status_code, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A readable reason and the first offending parameter from pydantic's error list.

    >>> validation_message([{"loc": ("body", "max_tokens"), "msg": "too big"}])
    ('max_tokens: too big', 'max_tokens')
    """
    parts, first = [], None
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "request body"
        first = first or (".".join(loc) or None)
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", first


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (its ``state.serving`` provides the metrics)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path in GENERATION_PATHS:
            request.app.state.serving.service.metrics.count("rejected")
        message, param = validation_message(list(exc.errors()))
        return error_response(400, message, param=param)

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        return error_response(exc.status_code, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(GenerationTimeout)
    async def _timeout(request: Request, exc: GenerationTimeout) -> JSONResponse:
        return error_response(504, str(exc), code="timeout")

    @app.exception_handler(GenerationFailed)
    async def _failed(request: Request, exc: GenerationFailed) -> JSONResponse:
        return error_response(500, str(exc), code="generation_failed")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        message = str(exc.detail)
        if exc.status_code == 400 and request.url.path in GENERATION_PATHS:
            # FastAPI's refusal of a body it could not parse (invalid JSON comes as a validation
            # error): a refused generation request like any other.
            request.app.state.serving.service.metrics.count("rejected")
            if isinstance(exc.__cause__, RecursionError):
                message = "the request body nests too deeply to parse"
        return error_response(exc.status_code, message, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal server error ({type(exc).__name__})")
