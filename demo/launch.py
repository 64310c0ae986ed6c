"""The whole stack as real processes on loopback: serving, load, Prometheus, Alertmanager, webhook
receiver and detector.

:class:`StackLauncher` starts each component through a
:class:`~demo.supervisor.Supervisor`, knows its URL and talks to it (fault injection,
JSON reads). Prometheus starts first without the detector, for the calibration
(:func:`demo.seed.calibrate_and_seed` then seeds it with history and starts it again
with the full configuration). The demo (:mod:`demo.demo`) and the end-to-end test
drive the same object.

Every path is under ``StackOptions.state_dir`` (``var/demo`` for the demo), which
:meth:`StackLauncher.prepare` empties of the previous run's state and logs.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.backfill import PROMTOOL
from demo.render import (
    RUNBOOK_PATH,
    StackAddresses,
    StackConfigFiles,
    project_root,
    write_stack_configs,
)
from demo.runconfig import write_calibration_config, write_detector_config
from demo.stackfile import STACK_FILE_NAME, remove_stack_file
from demo.supervisor import ManagedProcess, ProcessSpec, Supervisor, http_status
from demo.synth import utc_hour
from demo.webhook import AlertReceiver, ReceivedAlert

__all__ = [
    "ALERTMANAGER",
    "DEFAULT_PORTS",
    "PROMETHEUS",
    "StackLauncher",
    "StackOptions",
    "pick_port",
]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
# The monitoring side runs niced: on a small machine the live traffic it measures must not slow
# down whenever Prometheus compacts or the detector fits (that would be a real anomaly).
_MONITORING_NICE = 10
# The components' usual ports (configs/*.yml); a busy one is replaced by a free one.
DEFAULT_PORTS = {
    "serving": 8080,
    "detector": 9105,
    "prometheus": 9090,
    "alertmanager": 9093,
    "webhook": 5001,
}


def pick_port(preferred: int | None) -> int:
    """``preferred`` if it is free on 127.0.0.1 (0 or None: any free port)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """What to run and how fast; the defaults are the demo's.

    ``step`` and ``detector_interval`` are the detector's query step and cycle; ``time_scale``
    multiplies every ``for``, ``keep_firing_for`` and Alertmanager wait of the rendered rules.
    ``rate`` is the request rate now (the load follows the daily curve around it).
    """

    engine: str = "vllm"
    state_dir: Path = Path("var/demo")
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    scrape_interval: str = "5s"
    time_scale: float = 0.25
    step: float = 15.0
    detector_interval: float = 5.0
    history_days: float = 4.0
    calibration_s: float = 60.0
    rate: float = 4.0
    concurrency: int = 256
    max_tokens: int | None = None
    synthetic_speed: float = 2.0
    load_duration_s: float = 3600.0
    seed: int = 0
    serving_ready_timeout: float = 900.0
    python: str = sys.executable


class StackLauncher:
    """Starts and stops the stack's components; see the module docstring.

    Parameters
    ----------
    options
        Engine, ports, intervals.
    supervisor
        Owns the child processes (entered by the caller, which thereby stops them all).
    on_alert
        Called with every alert the webhook receiver gets.
    """

    def __init__(
        self,
        options: StackOptions,
        supervisor: Supervisor,
        *,
        on_alert: Callable[[ReceivedAlert], None] | None = None,
    ) -> None:
        self.options = options
        self.supervisor = supervisor
        self.state = Path(options.state_dir).resolve()
        self.admin_token = secrets.token_urlsafe(24)
        ports = {name: pick_port(options.ports.get(name)) for name in DEFAULT_PORTS}
        self.addresses = StackAddresses(
            serving=f"127.0.0.1:{ports['serving']}",
            detector=f"127.0.0.1:{ports['detector']}",
            prometheus=f"127.0.0.1:{ports['prometheus']}",
            alertmanager=f"127.0.0.1:{ports['alertmanager']}",
            webhook_url=f"http://127.0.0.1:{ports['webhook']}/alerts",
        )
        self.webhook = AlertReceiver(
            port=ports["webhook"], log_path=self.state / "alerts.jsonl", on_alert=on_alert
        )
        self._configs: StackConfigFiles | None = None
        self.prometheus_started = math.nan

    # -- paths and URLs --------------------------------------------------------------------------
    def url(self, component: str) -> str:
        """``http://host:port`` of a component (serving, detector, prometheus, alertmanager)."""
        if component == "webhook":
            return self.webhook.url
        return "http://" + getattr(self.addresses, component)

    @property
    def configs(self) -> StackConfigFiles:
        """The rendered configuration (after :meth:`prepare`)."""
        if self._configs is None:
            raise RuntimeError("call prepare() first: the configuration is not rendered yet")
        return self._configs

    @property
    def prometheus_data(self) -> Path:
        """Prometheus's TSDB folder."""
        return self.state / "prometheus"

    def prepare(self) -> None:
        """Check the tools, empty the state folder of a previous run, render the configuration.

        Raises ``FileNotFoundError`` naming a missing tool and how to install it.
        """
        for tool in (PROMETHEUS, ALERTMANAGER, PROMTOOL):
            if not os.access(tool, os.X_OK):
                raise FileNotFoundError(
                    f"{tool} is not installed: `make demo` installs it as root, or "
                    "apt-get install prometheus prometheus-alertmanager"
                )
        self.state.mkdir(parents=True, exist_ok=True)
        stale = ("config", "prometheus", "alertmanager", "detector", "alerts.jsonl")
        for name in (*stale, STACK_FILE_NAME):
            path = self.state / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for log in self.supervisor.log_dir.glob("*.log"):
            log.unlink()
        self._configs = write_stack_configs(
            self.state / "config",
            self.addresses,
            scrape_interval=self.options.scrape_interval,
            time_scale=self.options.time_scale,
            runbook_base=(project_root() / RUNBOOK_PATH).as_uri(),
        )

    # -- components -----------------------------------------------------------------------------
    def _cli(self, *args: str) -> list[str]:
        return [self.options.python, "-m", "llmwatch.cli", *args]

    def start_serving(self) -> ManagedProcess:
        """The OpenAI-compatible server on the chosen engine; ready when ``/health`` is 200."""
        opts = self.options
        port = self.addresses.serving.rsplit(":", 1)[1]
        argv = self._cli("serve", "--engine", opts.engine, "--host", "127.0.0.1", "--port", port)
        argv += ["--log-level", "warning"]
        if opts.engine == "synthetic":
            # Fast enough that the default rate stays far from the server's capacity.
            argv += ["--speed", f"{opts.synthetic_speed:g}", "--max-running", "64"]
        return self.supervisor.start(
            ProcessSpec(
                name="serving",
                argv=argv,
                env={"LLMWATCH_SERVING_ADMIN_TOKEN": self.admin_token},
                ready_url=self.url("serving") + "/health",
                ready_timeout=opts.serving_ready_timeout,
            )
        )

    def peak_rate(self, now: float | None = None) -> float:
        """The daily curve's peak rate that makes the rate now ``options.rate``."""
        from serving.workload import daily_rate_factor

        hour = float(utc_hour(time.time() if now is None else now))
        return self.options.rate / daily_rate_factor(hour)

    def start_load(self) -> ManagedProcess:
        """Open-loop chat traffic on the daily curve of the wall clock (a 24 h day)."""
        opts = self.options
        now = time.time()
        peak = self.peak_rate(now)
        argv = self._cli(
            "loadgen",
            "--url",
            self.url("serving"),
            "--max-duration",
            f"{opts.load_duration_s:.0f}s",
            "--max-requests",
            str(int(peak * opts.load_duration_s * 2) + 100),
            "--rate",
            f"{peak:.4f}",
            "--shape",
            "daily",
            "--day-length",
            "24h",
            "--start-hour",
            f"{float(utc_hour(now)):.4f}",
            "--concurrency",
            str(opts.concurrency),
            "--seed",
            str(opts.seed),
        )
        if opts.max_tokens is not None:
            argv += ["--max-tokens", str(opts.max_tokens)]
        return self.supervisor.start(ProcessSpec(name="loadgen", argv=argv, stop_timeout=5.0))

    def start_alerting(self) -> ManagedProcess:
        """The webhook receiver (in this process) and Alertmanager posting to it."""
        self.webhook.start()
        data = self.state / "alertmanager"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            ALERTMANAGER,
            f"--config.file={self.configs.alertmanager}",
            f"--storage.path={data}",
            f"--web.listen-address={self.addresses.alertmanager}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]
        return self.supervisor.start(
            ProcessSpec(
                name="alertmanager",
                argv=argv,
                ready_url=self.url("alertmanager") + "/-/ready",
                nice=_MONITORING_NICE,
            )
        )

    def start_prometheus(self, *, calibration: bool = False) -> ManagedProcess:
        """Prometheus on the rendered config and the state folder's TSDB.

        With ``calibration``, without the detector's scrape job and alert rules.
        """
        self.prometheus_data.mkdir(parents=True, exist_ok=True)
        config = self.configs.prometheus
        if calibration:
            config = write_calibration_config(config)
        argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.prometheus_data}",
            f"--web.listen-address={self.addresses.prometheus}",
            "--storage.tsdb.retention.time=30d",
        ]
        child = self.supervisor.start(
            ProcessSpec(
                name="prometheus",
                argv=argv,
                ready_url=self.url("prometheus") + "/-/ready",
                ready_timeout=120.0,
                nice=_MONITORING_NICE,
            )
        )
        self.prometheus_started = time.time()
        return child

    @property
    def detector_config_path(self) -> Path:
        """Where :meth:`detector_config` writes the detector's settings."""
        return self.state / "config" / "detector.yaml"

    def detector_config(self) -> Path:
        """``configs/detector.yaml`` pointed at this stack, its state under the state folder."""
        opts = self.options
        return write_detector_config(
            self.detector_config_path,
            prometheus_url=self.url("prometheus"),
            port=int(self.addresses.detector.rsplit(":", 1)[1]),
            state_dir=self.state / "detector",
            step=opts.step,
            interval=opts.detector_interval,
            training_days=opts.history_days + 1,
        )

    def start_detector(self, *, models_timeout: float = 300.0) -> ManagedProcess:
        """``llmwatch detect`` on :meth:`detector_config`; returns once ``/health`` is 200
        (a model is loaded for every signal with data)."""
        config = self.detector_config()
        child = self.supervisor.start(
            ProcessSpec(
                name="detector",
                argv=self._cli("detect", "--config", str(config), "--log-level", "warning"),
                ready_url=self.url("detector") + "/health",
                ready_codes=frozenset({200, 503}),  # up; models come next
                ready_timeout=120.0,
                nice=_MONITORING_NICE,
            )
        )
        deadline = time.monotonic() + models_timeout
        while http_status(self.url("detector") + "/health") != 200:
            self.supervisor.check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the detector has no model after {models_timeout:.0f} s: {child.log_tail()}"
                )
            time.sleep(0.5)
        return child

    @property
    def stack_file(self) -> Path:
        """``stack.json`` in the state folder (:mod:`demo.stackfile`)."""
        return self.state / STACK_FILE_NAME

    # -- talking to the components ----------------------------------------------------------------
    def get_json(self, component: str, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON document from a component (HTTP errors raise)."""
        with urllib.request.urlopen(self.url(component) + path, timeout=timeout) as response:
            return json.loads(response.read())

    def inject_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``POST /admin/faults`` on the serving app; returns the fault as the server shows it."""
        request = urllib.request.Request(
            self.url("serving") + "/admin/faults",
            data=json.dumps(spec).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.admin_token}",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def alerts_received(self) -> list[ReceivedAlert]:
        """What the webhook receiver got so far."""
        return self.webhook.alerts()

    def close(self) -> None:
        """Stop the webhook receiver and remove :attr:`stack_file` (the supervisor stops the
        children)."""
        remove_stack_file(self.stack_file)
        self.webhook.stop()
