"""A small Alertmanager webhook receiver: keeps and logs every notification it is sent.

``POST /alerts`` takes Alertmanager's webhook payload (version 4): each alert in it is appended
to a JSON-lines log (one line per alert, with the notification's receiver and the time it
arrived) and handed to an optional callback, which is how the demo shows alerts in the terminal.
``GET /alerts`` lists what arrived, newest last. It binds a loopback address by default; a
malformed body gets 400 with the reason.

>>> receiver = AlertReceiver().start()
>>> receiver.url.startswith("http://127.0.0.1:")
True
>>> receiver.stop()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["AlertReceiver", "ReceivedAlert", "parse_notification"]

_MAX_BODY = 4 * 1024 * 1024
_PATH = "/alerts"


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


class AlertReceiver:
    """The webhook endpoint, served from a background thread.

    Parameters
    ----------
    host, port
        Where to listen; port 0 picks a free one.
    log_path
        JSON-lines file every received alert is appended to (None: kept in memory only).
    on_alert
        Called with each :class:`ReceivedAlert`, from the server's thread.
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
        self._server: ThreadingHTTPServer | None = None

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

    def start(self) -> AlertReceiver:
        """Listen and serve on a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: HTTPStatus, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] != _PATH:
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"only {_PATH} is served"})
                    return
                self._reply(HTTPStatus.OK, {"alerts": [asdict(a) for a in receiver.alerts()]})

            def do_POST(self) -> None:
                if self.path.split("?")[0] != _PATH:
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"post to {_PATH}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 < length <= _MAX_BODY:
                    self._reply(HTTPStatus.BAD_REQUEST, {"error": "a JSON body up to 4 MiB"})
                    return
                try:
                    payload = json.loads(self.rfile.read(length))
                    alerts = parse_notification(payload, time.time())
                except ValueError as exc:  # JSONDecodeError is a ValueError
                    self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                    return
                receiver._accept(alerts)
                self._reply(HTTPStatus.OK, {"received": len(alerts)})

            def log_message(self, *args: object) -> None:
                pass  # the alerts log is the record; access lines would only repeat it

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(
            target=self._server.serve_forever, name="alert-webhook", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
