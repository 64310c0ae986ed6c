"""A small Alertmanager webhook receiver: keeps and logs every notification it is sent.

``POST /alerts`` takes Alertmanager's webhook payload (version 4): each alert in it is appended
to a JSON-lines log (one line per alert, with the notification's receiver and the time it
arrived) and handed to an optional callback, which is how the demo shows alerts in the terminal.
``GET /alerts`` lists what arrived, newest last. It is a FastAPI app that uvicorn serves from a
background thread, on a loopback address by default. A malformed body gets 400 with the reason,
one over 4 MiB gets 413; every error is ``{"error": reason}``.

>>> receiver = AlertReceiver().start()
>>> receiver.url.startswith("http://127.0.0.1:")
True
>>> receiver.stop()
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["AlertReceiver", "ReceivedAlert", "parse_notification"]

_MAX_BODY = 4 * 1024 * 1024
_PATH = "/alerts"
_START_TIMEOUT = 10.0  # seconds for uvicorn to start serving on the bound socket
_STOP_TIMEOUT = 10.0  # seconds for in-flight notifications to finish on stop


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert of one notification, as the receiving end sees it."""

    received_at: float  # unix seconds
    receiver: str  # Alertmanager receiver (webhook-critical, -warning, -default)
    status: str  # firing or resolved
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    ends_at: str = ""

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return self.labels.get("alertname", "")


def parse_notification(payload: Any, received_at: float) -> list[ReceivedAlert]:
    """The alerts of an Alertmanager webhook payload; ``ValueError`` naming what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise ValueError("'alerts' must be a list")
    receiver = str(payload.get("receiver", ""))
    out = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise ValueError(f"alerts[{i}] must be an object with a 'labels' object")
        out.append(
            ReceivedAlert(
                received_at=received_at,
                receiver=receiver,
                status=str(alert.get("status", payload.get("status", ""))),
                labels={str(k): str(v) for k, v in alert["labels"].items()},
                annotations={str(k): str(v) for k, v in (alert.get("annotations") or {}).items()},
                starts_at=str(alert.get("startsAt", "")),
                ends_at=str(alert.get("endsAt", "")),
            )
        )
    return out


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass the limit."""
    too_large = HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "a JSON body up to 4 MiB")
    # The declared length refuses an oversized body unread; the count below bounds a chunked one.
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_BODY:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise too_large
    return bytes(body)


async def _error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every refusal as ``{"error": reason}``, FastAPI's own (404, 405) included."""
    reason = f"only {_PATH} is served" if exc.status_code == HTTPStatus.NOT_FOUND else exc.detail
    return JSONResponse({"error": reason}, status_code=exc.status_code, headers=exc.headers)


class AlertReceiver:
    """The webhook endpoint, served from a background thread.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free one (``.port`` and ``.url`` tell which once started).
    log_path
        JSON-lines file every received alert is appended to (None: kept in memory only).
    on_alert
        Called with each :class:`ReceivedAlert`, from one of the server's worker threads.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        on_alert: Callable[[ReceivedAlert], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.on_alert = on_alert
        self._alerts: list[ReceivedAlert] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where Alertmanager posts (``http://host:port/alerts``)."""
        return f"http://{self.host}:{self.port}{_PATH}"

    def alerts(self) -> list[ReceivedAlert]:
        """Every alert received so far, oldest first."""
        with self._lock:
            return list(self._alerts)

    def _accept(self, alerts: list[ReceivedAlert]) -> None:
        with self._lock:
            self._alerts.extend(alerts)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as log:
                    for alert in alerts:
                        log.write(json.dumps(asdict(alert), sort_keys=True) + "\n")
        if self.on_alert is not None:
            for alert in alerts:
                self.on_alert(alert)

    def _app(self) -> FastAPI:
        # Only /alerts is served: no interactive docs or schema beside it.
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.exception_handler(StarletteHTTPException)(_error)

        @app.get(_PATH)
        def listed() -> dict[str, Any]:
            return {"alerts": [asdict(a) for a in self.alerts()]}

        @app.post(_PATH)
        async def notified(request: Request) -> dict[str, int]:
            body = await _read_body(request)
            try:
                alerts = parse_notification(json.loads(body), time.time())
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise HTTPException(HTTPStatus.BAD_REQUEST, str(exc)) from exc
            # The log write and the caller's callback block: keep them off the event loop.
            await run_in_threadpool(self._accept, alerts)
            return {"received": len(alerts)}

        return app

    def start(self) -> AlertReceiver:
        """Listen and serve on a daemon thread; returns once it answers requests."""
        # Binding here, not in uvicorn, makes a taken port an OSError in the caller (uvicorn
        # would sys.exit in its thread) and tells the port that 0 picked before serving.
        sock = socket.create_server((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,  # the alerts log is the record; access lines would only repeat it
            timeout_graceful_shutdown=_STOP_TIMEOUT,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="alert-webhook", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the webhook receiver did not start on {self.url}")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=_STOP_TIMEOUT + 5)
            self._server = self._thread = None
