"""The request body limit: a body over ``max_body_bytes`` is refused (413) before it is parsed.

A declared ``Content-Length`` over the limit is answered at once, without reading the body. A body
without one (``Transfer-Encoding: chunked``) is counted as it arrives, and reading stops at the
limit, so no body larger than the limit is ever held or parsed. (A lying, smaller
``Content-Length`` cannot deliver more: the HTTP server reads only the declared length as body.)

The 413 carries ``Connection: close``: the rest of the body is never read, so the connection
cannot serve another request.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.responses import error_body

__all__ = ["BodyLimit", "BodyTooLarge"]

_SETTING = "LLMWATCH_SERVING_MAX_BODY_BYTES"


class BodyTooLarge(HTTPException):
    """The request body exceeds the limit (HTTP 413).

    Raised from ``receive``: FastAPI re-raises an ``HTTPException`` met while reading the body
    (anything else would become its generic 400), and the handler that
    :mod:`serving.api.errors` installs answers with :meth:`response`.
    """

    def __init__(self, limit: int, declared: int | None = None) -> None:
        size = f" ({declared} bytes)" if declared is not None else ""
        message = (
            f"the request body{size} exceeds the server's limit of {limit} bytes "
            f"(max_body_bytes, {_SETTING})"
        )
        super().__init__(413, message, headers={"Connection": "close"})

    def response(self) -> JSONResponse:
        """The OpenAI-style 413."""
        body = error_body(str(self.detail), type_="invalid_request_error", code="request_too_large")
        return JSONResponse(body, status_code=413, headers=self.headers)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The HTTP server has refused malformed lengths already.
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """ASGI middleware enforcing the limit; ``on_refused(scope)`` is called for each refusal."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, on_refused: Callable[[Scope], None]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a ``receive`` that refuses bodies over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            self.on_refused(scope)
            await BodyTooLarge(limit, declared).response()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.on_refused(scope)
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)
