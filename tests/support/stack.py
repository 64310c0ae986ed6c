"""Helpers of the stack tests: the real tools and a real Alertmanager.

Servers are the Debian binaries on free loopback ports (a missing one fails the test, or skips
it where allowed: :mod:`support.requires`). Prometheus reuses
:class:`support.servers.PrometheusServer` with the stack's own rendered ``prometheus.yml``
instead of the generated one. The webhook receiver is the product's
own :class:`demo.webhook.AlertReceiver` (see the ``webhook`` fixture).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from support.requires import need_binary
from support.servers import PrometheusServer, ServerProcess

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def need(binary: str) -> None:
    """Fail (skip where allowed) when ``binary`` is not installed."""
    need_binary(binary, "make stack-tools, or apt-get install prometheus prometheus-alertmanager")


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run promtool or amtool; the result carries both output streams."""
    need(argv[0])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def http_json(url: str, body: Any = None) -> Any:
    """GET (or POST ``body`` as JSON) and decode the JSON answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read()
    return json.loads(text) if text else None


def wait_for(fetch: Callable[[], T], ready: Callable[[T], object], timeout: float = 20.0) -> T:
    """Call ``fetch`` until ``ready`` accepts its result; the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if ready(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@dataclass
class AlertmanagerServer(ServerProcess):
    """A real Alertmanager on a free port with its own storage, clustering off; run as the
    other test servers are (:class:`support.servers.PrometheusServer`)."""

    config: Path | None = None

    def start(self) -> AlertmanagerServer:
        assert self.config is not None
        argv = [
            ALERTMANAGER,
            f"--config.file={self.config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]
        self._launch(argv, "/-/ready")
        return self


@dataclass
class StackPrometheus(PrometheusServer):
    """:class:`PrometheusServer` on a given config file (the stack's rendered one)."""

    config: Path | None = None

    def write_config(self) -> Path:
        assert self.config is not None
        return self.config
