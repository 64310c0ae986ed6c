"""Real time-series databases and a scrape target for tests: no mocks, the Debian binaries.

What is here (fixtures wrapping them are in ``tests/conftest.py``):

- :class:`Series` — one series' name, labels, timestamps (unix s) and values; NaN/Inf allowed.
- :func:`backfill_prometheus` — write series as OpenMetrics and turn them into TSDB blocks with
  ``promtool tsdb create-blocks-from openmetrics``: days of history in seconds. Do it *before*
  the Prometheus using that data folder starts; keep the history in the past.
- :class:`PrometheusServer` — ``/usr/bin/prometheus`` on a free 127.0.0.1 port with its own data
  folder and generated config (scrape targets, rule files, scrape interval). ``start``,
  ``stop``, ``kill`` (SIGKILL, for outage tests) and ``start`` again on the same data; retention
  is 10 years, so backfilled history is never deleted; ``--web.enable-lifecycle`` is on. Its
  process is run as the demo's are (:class:`demo.supervisor.ManagedProcess`, on honcho).
- :class:`VictoriaMetricsServer` — ``/usr/bin/victoria-metrics`` likewise, with
  :meth:`~VictoriaMetricsServer.import_series` (JSON-lines import + flush) instead of promtool,
  and the response cache and the 30 s latency offset turned off so imported points are visible.
- :class:`SyntheticExporter` — a tiny live ``/metrics`` target whose values tests set.

Fixtures (``tests/conftest.py``): ``prometheus_factory(**kwargs)`` and ``vm_factory(**kwargs)``
start servers and stop them all at teardown; ``synthetic_exporter`` is a running exporter.
A test that needs a missing binary fails, or skips where that is allowed (:mod:`support.requires`).

Example::

    def test_x(prometheus_factory, tmp_path):
        series = [Series("llmwatch:error_ratio", {}, t, v)]
        prom = prometheus_factory(backfill=series)
        # prom.url -> "http://127.0.0.1:<port>"
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml

from demo.backfill import (
    PROMTOOL,
    Series,
    backfill_prometheus,
    format_value,
    openmetrics_text,
)
from demo.supervisor import ManagedProcess, ProcessSpec

__all__ = [
    "PROMETHEUS",
    "PROMTOOL",
    "VICTORIA_METRICS",
    "PrometheusServer",
    "Series",
    "ServerProcess",
    "SyntheticExporter",
    "VictoriaMetricsServer",
    "backfill_prometheus",
    "free_port",
    "openmetrics_text",
]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
VICTORIA_METRICS = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, child: ManagedProcess, timeout: float = 60.0) -> None:
    # Readiness only: a test server's self-signed certificate is not what is being checked here.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running:
            raise RuntimeError(f"{url}: server exited ({child.returncode}): {child.log_tail(2000)}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not ready after {timeout} s: {child.log_tail(2000)}")


@dataclass
class ServerProcess:
    """A server binary run as the demo runs its processes, on a free loopback port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    child: ManagedProcess | None = None

    scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def _launch(self, argv: list[str], ready_path: str) -> None:
        if self.child is not None and self.child.running:
            raise RuntimeError("already running")
        spec = ProcessSpec(name=type(self).__name__, argv=argv)
        self.child = ManagedProcess(spec, self.log_path, self.workdir / "server.pid")
        self.child.launch()
        _wait_http(self.url + ready_path, self.child)

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM), SIGKILL after 20 s."""
        if self.child is not None:
            self.child.stop()

    def kill(self) -> None:
        """Crash it (SIGKILL): an outage as a real server has one."""
        if self.child is not None:
            self.child.kill()

    def _signal(self, signum: int) -> None:
        if self.child is not None and self.child.running and self.child.pid is not None:
            os.kill(self.child.pid, signum)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections are accepted but never answered (slow server)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze after :meth:`pause`."""
        self._signal(signal.SIGCONT)


@dataclass
class PrometheusServer(ServerProcess):
    """A real Prometheus; ``targets`` are ``host:port`` scraped every ``scrape_interval``."""

    targets: Sequence[str] = ()
    rule_files: Sequence[Path] = ()
    scrape_interval: str = "1s"
    extra_args: Sequence[str] = ()
    web_config: dict | None = None  # --web.config.file: tls_server_config, basic_auth_users

    @property
    def scheme(self) -> str:  # type: ignore[override]
        return "https" if self.web_config and "tls_server_config" in self.web_config else "http"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def backfill(self, series: Sequence[Series]) -> None:
        """Add history as TSDB blocks; call while stopped."""
        backfill_prometheus(self.data_dir, series)

    def write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": "synthetic", "static_configs": [{"targets": list(self.targets)}]}
            ]
            if self.targets
            else [],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> PrometheusServer:
        """Start (or restart on the same data) and wait until ``/-/ready``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            PROMETHEUS,
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=3650d",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]
        if self.web_config:
            web = self.workdir / "web.yml"
            web.write_text(yaml.safe_dump(self.web_config))
            argv.append(f"--web.config.file={web}")
        self._launch(argv, "/-/ready")
        return self


@dataclass
class VictoriaMetricsServer(ServerProcess):
    """A real single-node VictoriaMetrics, fed by :meth:`import_series` or scraping ``targets``."""

    targets: Sequence[str] = ()
    scrape_interval: str = "1s"
    extra_args: Sequence[str] = ()  # e.g. -httpAuth.username=u -httpAuth.password=p

    def start(self) -> VictoriaMetricsServer:
        """Start (or restart on the same data) and wait until ``/health``."""
        argv = [
            VICTORIA_METRICS,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            *self.extra_args,
        ]
        if self.targets:
            config = {
                "global": {"scrape_interval": self.scrape_interval},
                "scrape_configs": [
                    {"job_name": "synthetic", "static_configs": [{"targets": list(self.targets)}]}
                ],
            }
            path = self.workdir / "scrape.yml"
            path.write_text(yaml.safe_dump(config))
            argv.append(f"-promscrape.config={path}")
        self._launch(argv, "/health")
        return self

    def import_series(self, series: Sequence[Series]) -> None:
        """Import through ``/api/v1/import`` (JSON lines) and flush so queries see it at once."""
        lines = []
        for s in series:
            ok = np.isfinite(s.values)
            lines.append(
                json.dumps(
                    {
                        "metric": {"__name__": s.name, **s.labels},
                        "values": s.values[ok].tolist(),
                        "timestamps": (s.timestamps[ok] * 1000).astype(np.int64).tolist(),
                    }
                )
            )
        body = ("\n".join(lines) + "\n").encode()
        headers = {}
        user = next((a.split("=", 1)[1] for a in self.extra_args if "httpAuth.username" in a), "")
        if user:
            word = next(a.split("=", 1)[1] for a in self.extra_args if "httpAuth.password" in a)
            headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{user}:{word}".encode()).decode()
            )
        req = urllib.request.Request(
            self.url + "/api/v1/import", data=body, method="POST", headers=headers
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            if resp.status not in (200, 204):
                raise RuntimeError(f"import failed: {resp.status}")
        flush = urllib.request.Request(self.url + "/internal/force_flush", headers=headers)
        with urllib.request.urlopen(flush, timeout=60):
            pass


class SyntheticExporter:
    """A live scrape target: ``/metrics`` shows the gauges set with :meth:`set`.

    >>> exp = SyntheticExporter().start()
    >>> exp.set("demo_value", 1.5, model="a")
    >>> "demo_value{model=\\"a\\"} 1.5" in exp.render()
    True
    >>> exp.stop()
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = float(value)

    def remove(self, name: str, **labels: str) -> None:
        with self._lock:
            self._values.pop((name, tuple(sorted(labels.items()))), None)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines = []
        for (name, labels), value in items:
            inner = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(
                f"{name}{{{inner}}} {format_value(value)}"
                if inner
                else f"{name} {format_value(value)}"
            )
        return "\n".join(lines) + "\n"

    def start(self) -> SyntheticExporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
