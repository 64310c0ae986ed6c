"""Client disconnects: cancel the work of a request whose client has gone, streaming or not.

ASGI servers such as uvicorn silently drop what is sent after a disconnect, so a handler would
keep generating for nobody. :func:`cancel_on_disconnect` watches ``receive`` for
``http.disconnect`` and cancels the handler's task; the generation then closes, which aborts the
engine request and counts it (see :mod:`serving.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["ClientGone", "EventStreamResponse", "cancel_on_disconnect"]


class ClientGone(Exception):
    """The client disconnected while the request was being answered."""


@contextlib.asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Run the block; if the client disconnects meanwhile, cancel it and raise :class:`ClientGone`.

    ``receive`` must have delivered the whole request body already.
    """
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancel_on_disconnect needs a running task")
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch(), name="disconnect-watcher")
    try:
        yield
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


class EventStreamResponse(Response):
    """A ``text/event-stream`` response of ``events`` that stops when the client goes away.

    ``events`` is always closed when the response ends, so its cleanup (abort, counting) runs
    right away, also after a disconnect.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        # Not Response.__init__: there is no body to render up front.
        self.events = events
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the events as the response body."""
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies must not buffer the stream
        ]
        try:
            async with cancel_on_disconnect(receive):
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (ClientGone, OSError):
            pass  # nobody to answer; closing the events below counts the request
        finally:
            await self.events.aclose()
        if self.background is not None:
            await self.background()
