"""Days of every configured signal in a real Prometheus, and a real ``llmwatch detect`` beside it.

For the notebook and workbench tests: :func:`demo_history` draws the configured signals from the
``quiet_week`` scenario (daily and weekly seasonality, noise, scrape gaps), shifted to end at a
given time, with an optional latency regression (vLLM's engine signals, where the scenario has
no column for them, derived from its serving columns); :func:`demo_config` writes a detector
configuration with ``configs/detector.yaml``'s signals pointing at the test's servers;
:class:`DetectorProcess` runs ``llmwatch detect`` on it as a user would; :class:`ApiServer` serves
the REST API app alone (on an event store, or a view the test builds) under a real uvicorn.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import uvicorn
import yaml
from fastapi import FastAPI

from detector.evaluation.scenarios import generate
from detector.workbench.offline import engine_columns
from support.servers import Series, free_port

__all__ = [
    "CONFIG",
    "INCIDENT_SIGNALS",
    "ApiServer",
    "DetectorProcess",
    "demo_config",
    "demo_history",
]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "detector.yaml"
_ENGINE_SIGNALS = (
    "kv_cache_usage_ratio",
    "requests_waiting",
    "requests_running",
    "queue_time_p95_seconds",
    "preemptions_per_second",
    "inter_token_latency_p95_seconds",
    "prefill_time_p95_seconds",
    "decode_time_p95_seconds",
    "prompt_tokens_per_request",
)
# Scenario column -> configured signal, with the labels its recording rule keeps.
_SIGNALS = {
    "latency_p95_seconds": ("latency_p95_seconds", {}),
    "latency_p99_seconds": ("latency_p99_seconds", {}),
    "ttft_p95_seconds": ("ttft_p95_seconds", {}),
    "requests_per_second": ("requests_per_second", {}),
    "error_ratio": ("error_ratio", {}),
    "json_error_ratio": ("json_error_ratio", {}),
    "gpu_memory_used_mb": ("gpu_memory_used_mb", {"device": "0"}),
    "tokens_per_request": ("output_tokens_per_request", {}),
    **{name: (name, {}) for name in _ENGINE_SIGNALS},
}
# A slow deploy: every latency signal moves at once.
INCIDENT_SIGNALS = ("latency_p95_seconds", "latency_p99_seconds", "ttft_p95_seconds")


def demo_history(
    end: float,
    *,
    days: float = 7.0,
    step: float = 60.0,
    incident_at: float | None = None,
    incident_points: int = 15,
    factor: float = 2.5,
    seed: int = 0,
) -> list[Series]:
    """Every configured signal as ``llmwatch:<signal>`` series for ``days`` up to ``end``.

    With ``incident_at`` the latency signals are ``factor`` times higher for ``incident_points``
    rows from then. Every series ends with a NaN one ``step`` after its last sample, as a
    series that stops leaves a staleness marker: without it Prometheus' five-minute lookback
    would hand a detector pulling after ``end`` the last value again and again, which no live
    series does, and a repeated upper-tail value reads as a level shift.
    """
    first = np.ceil((end - days * 86_400.0) / step) * step
    start = pd.Timestamp(first, unit="s").isoformat()
    frame = generate("quiet_week", seed=seed, days=days, step_s=step, start=start).frame
    t = frame.index.as_unit("ns").asi8 / 1e9
    keep = t <= end
    frame, t = frame[keep], t[keep]
    frame = frame.assign(**engine_columns(frame))
    out = []
    for column, (name, labels) in _SIGNALS.items():
        values = frame[column].to_numpy(dtype=np.float64).copy()
        if incident_at is not None and column in INCIDENT_SIGNALS:
            hit = (t >= incident_at) & (t < incident_at + incident_points * step)
            values[hit] *= factor
        ok = np.isfinite(values)
        stamps = np.append(t[ok], t[ok][-1] + step)
        out.append(Series(f"llmwatch:{name}", dict(labels), stamps, np.append(values[ok], np.nan)))
    return out


def demo_config(path: Path, *, prometheus_url: str, root: Path, port: int = 0) -> Path:
    """The repository's detector configuration against the test's servers and temp folders."""
    config = yaml.safe_load(CONFIG.read_text())
    config.update(
        prometheus={"url": prometheus_url, "timeout": "10s"},
        interval="1s",
        registry_root=str(root / "models"),
        history_db=str(root / "var" / "history.sqlite"),
        port=port or free_port(),
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class DetectorProcess:
    """``llmwatch detect --config CONFIG`` in a child process, serving at ``url``."""

    config: Path
    log: Path
    proc: subprocess.Popen | None = None
    port: int = field(init=False, default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> DetectorProcess:
        """Start and wait until ``/api/v1/models`` lists a model for every signal."""
        self.port = int(yaml.safe_load(self.config.read_text())["port"])
        cmd = [sys.executable, "-m", "llmwatch.cli", "detect", "--config", str(self.config)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmwatch detect exited: {self.log.read_text()[-3000:]}")
            try:
                models = self.get("/api/v1/models")["data"]
                if models and all(m["version"] for m in models):
                    return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"llmwatch detect not ready: {self.log.read_text()[-3000:]}")

    def get(self, path: str) -> dict:
        """GET a JSON document from the service."""
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> str:
        """SIGTERM, wait, and return the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log.read_text()


class ApiServer:
    """``app`` under a real uvicorn server on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        with contextlib.suppress(RuntimeError):
            self.thread.join(timeout=30)
