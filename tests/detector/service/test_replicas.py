"""Three sharded replicas (``llmwatch detect --shard i/3`` processes) on one VictoriaMetrics,
sharing their event history in a real PostgreSQL: disjoint shards that cover every series, any
replica's API answering for all of them, and a replica killed with SIGKILL losing no events.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from support.history import daily_series, grid_times
from support.servers import Series, free_port

from detector.registry.store import ModelRegistry
from detector.service.config import load_settings
from detector.service.source import PrometheusSource
from detector.service.training import train_signal

pytestmark = pytest.mark.integration

STEP = 10.0
N_SERIES = 12
SIGNAL = {"name": "latency", "query": "llmwatch:latency_p95_seconds", "direction": "up"}


def _series(t: np.ndarray, spike: tuple[float, float] | None = None) -> list[Series]:
    out = []
    for i in range(N_SERIES):
        s = daily_series(SIGNAL["query"], {"model": f"m{i}"}, t, base=1.0 + i / 10, seed=i)
        if spike is not None:
            s.values[(t >= spike[0]) & (t < spike[1])] += 3.0  # far above any band
        out.append(s)
    return out


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _until(what: str, check: Callable[[], bool], timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, OSError, KeyError):
            pass
        time.sleep(1.0)
    tails = "\n".join(p.read_text()[-2000:] for p in sorted(logs.glob("replica-*.log")))
    raise AssertionError(f"not within {timeout:.0f} s: {what}\n{tails}")


class _Replicas:
    """``llmwatch detect`` processes, one per shard, started, killed and restarted by index."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen | None] = [None] * 3

    def start(self, i: int) -> None:
        cmd = [sys.executable, "-m", "llmwatch.cli", "detect", "--config", str(self.config)]
        cmd += ["--shard", f"{i}/3", "--port", str(self.ports[i]), "--log-level", "warning"]
        with (self.logs / f"replica-{i}.log").open("a") as log:
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            self.procs[i] = None

    def stop(self) -> None:
        for proc in filter(None, self.procs):
            proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill(i)


@pytest.fixture
def replicas(vm_factory, postgres_url: str, tmp_path: Path) -> Iterator[tuple[_Replicas, Any]]:
    """Three trained shards on 12 hours of history up to now, not started yet."""
    now = float(np.floor(time.time() / STEP) * STEP)
    vm = vm_factory(series=_series(grid_times(now - 12 * 3600, now + STEP, STEP)))
    values = {
        "prometheus": {"url": vm.url, "timeout": 5},
        "interval": STEP,
        "training_window": "12h",
        "min_train_span": "6h",
        "retrain_interval": "7d",
        "stale_after": 30,
        "registry_root": str(tmp_path / "models"),
        "history_url": postgres_url,
        "signals": [SIGNAL],
    }
    config = tmp_path / "detector.yaml"
    config.write_text(yaml.safe_dump(values))
    registry = ModelRegistry(tmp_path / "models")
    for i in range(3):
        settings = load_settings(config, shard=f"{i}/3")
        source = PrometheusSource(settings.prometheus)
        assert train_signal(settings, settings.signals[0], source, registry, end=now) is not None
    group = _Replicas(config, tmp_path)
    yield group, vm
    group.stop()


def _labels(items: list[dict]) -> list[str]:
    return sorted(i["labels"]["model"] for i in items)


def test_three_replicas_share_one_history(replicas) -> None:
    group, vm = replicas
    for i in range(3):
        group.start(i)
    ports, logs = group.ports, group.logs
    healthy = lambda: all(_get(p, "/health")["status"] == "ok" for p in ports)  # noqa: E731
    _until("every replica healthy", healthy, 120, logs)
    # From now on the data goes on, with a latency incident on every series.
    begin = float(np.floor(time.time() / STEP) * STEP)
    spike = (begin + 2 * STEP, begin + 8 * STEP)
    vm.import_series(_series(grid_times(begin - 600, begin + 900, STEP), spike))

    # Each replica scores its own shard: disjoint, and together every series.
    scoring = lambda: all(_get(p, "/api/v1/signals/latency")["series"] for p in ports)  # noqa: E731
    _until("every replica scoring", scoring, 60, logs)
    owned = [_labels(_get(p, "/api/v1/signals/latency")["series"]) for p in ports]
    every = [m for models in owned for m in models]
    assert sorted(every) == sorted(f"m{i}" for i in range(N_SERIES)) and all(owned), owned

    def all_listed(port: int) -> bool:
        return _get(port, "/api/v1/anomalies")["count"] == N_SERIES

    for port in ports:  # any replica lists every shard's anomalies, each by its owner
        _until(f"replica :{port} lists all anomalies", lambda p=port: all_listed(p), 120, logs)
    for port in ports:
        items = _get(port, "/api/v1/anomalies")["data"]
        by_shard = {
            f"{i}/3": _labels([a for a in items if a["shard"] == f"{i}/3"]) for i in range(3)
        }
        assert list(by_shard.values()) == owned
        assert _get(port, "/api/v1/anomalies/history")["count"] == N_SERIES
    ids = sorted(e["id"] for e in _get(ports[0], "/api/v1/anomalies/history")["data"])
    _kill_one_then_restart_it(group, owned, ids)


def _kill_one_then_restart_it(group: _Replicas, owned: list[list[str]], ids: list[int]) -> None:
    ports, logs = group.ports, group.logs
    group.kill(1)  # SIGKILL: no shutdown, its events stay as it last wrote them
    survivors = (ports[0], ports[2])

    def others_closed(port: int) -> bool:
        events = _get(port, "/api/v1/anomalies/history")["data"]
        return all(e["end"] is not None for e in events if e["shard"] != "1/3")

    for port in survivors:
        _until("the incident ends on the live shards", lambda p=port: others_closed(p), 150, logs)

    def dead_shard_stale(port: int) -> bool:
        items = _get(port, "/api/v1/anomalies")["data"]
        return _labels(items) == owned[1] and all(a["stale"] for a in items)

    for port in survivors:  # the stopped replica's anomalies stay listed, marked stale
        _until("shard 1's anomalies marked stale", lambda p=port: dead_shard_stale(p), 90, logs)
        history = _get(port, "/api/v1/anomalies/history")
        assert sorted(e["id"] for e in history["data"]) == ids  # nothing lost, nothing doubled

    group.start(1)  # resumes its open events and closes them, as the incident is over

    def all_closed() -> bool:
        events = _get(ports[0], "/api/v1/anomalies/history")["data"]
        return all(e["end"] is not None for e in events) and len(events) == N_SERIES

    _until("the restarted replica closes its events", all_closed, 150, logs)
    history = _get(ports[2], "/api/v1/anomalies/history")["data"]
    assert sorted(e["id"] for e in history) == ids
    assert _get(ports[1], "/api/v1/anomalies")["count"] == 0
