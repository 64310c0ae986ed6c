"""The detector never goes blind without saying so, and loses no event.

Faults a real server cannot produce on demand are injected: a query API answering 200 with a
malformed body (a small HTTP server here), a fit worker killed like the out-of-memory killer
would, a history that refuses writes (SQLite's query_only, as a full disk or a read-only mount
would), a database file that is not one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.service import refuse_writes

from detector.registry.store import ModelRegistry
from detector.service.config import (
    DetectorSettings,
    PrometheusSettings,
    SignalSettings,
    load_settings,
)
from detector.service.cycle_health import CycleHealth
from detector.service.event_log import RecordError
from detector.service.history import EventStore, check_history
from detector.service.loop import DetectorService
from detector.service.scheduler import FitScheduler
from detector.service.series_state import SignalTracker
from detector.service.source import FileSource, PrometheusSource, SeriesBatch, SourceError
from detector.service.training import fit_signal_model, train_signal

pytestmark = pytest.mark.integration

STEP = 60.0
SIGNAL = SignalSettings(name="latency", query="llmwatch:latency_p95_seconds", direction="up")


# -- a query API that answers 200 with whatever the test says ------------------------------------
@pytest.fixture
def garbage_api() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = [b'{"status":"success"}']

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[0]
            self.send_response(200)
            kind = "text/html" if body.startswith(b"<") else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


def test_a_malformed_answer_is_a_counted_query_error_not_a_crash(garbage_api) -> None:
    url, bodies = garbage_api
    source = PrometheusSource(PrometheusSettings(url=url, timeout=2))
    now = time.time()
    matrix = {"resultType": "matrix", "result": [{"metric": {}, "values": [[now, "abc"]]}]}
    cases = {
        b'{"status":"success"}': "no 'data' field",
        b"<html><body>502 Bad Gateway</body></html>": "not JSON",
        json.dumps({"status": "success", "data": matrix}).encode(): "ValueError",
        json.dumps({"status": "success", "data": {"result": {"x": 1}}}).encode(): "not a list",
    }
    for body, why in cases.items():
        bodies[0] = body
        with pytest.raises(SourceError, match="malformed answer") as err:
            source.fetch(SIGNAL, now - 600, now)
        assert why in str(err.value) and not err.value.unreachable, err.value
    source.close()


# -- events: durable, or kept until they are ------------------------------------------------------
def _history(days: float, *, end: float) -> pd.DataFrame:
    t = np.arange(end - days * 86_400, end + STEP / 2, STEP)
    rng = np.random.default_rng(0)
    values = 1.0 + 0.2 * np.sin(2 * np.pi * t / 86_400) + 0.02 * rng.standard_normal(t.size)
    index = pd.DatetimeIndex(pd.to_datetime(t, unit="s"), name="timestamp")
    return pd.DataFrame({'{model="a"}': values}, index=index)


def _batch(frame: pd.DataFrame) -> SeriesBatch:
    return SeriesBatch(frame, {c: {"model": "a"} for c in frame.columns})


def test_a_history_refusing_writes_loses_no_event(tmp_path: Path) -> None:
    end = 1_767_571_200.0
    train = _history(3, end=end)
    tracker = SignalTracker(SIGNAL, stale_after=600, buffer_span=3600)
    tracker.install(fit_signal_model(train, SIGNAL, {c: {"model": "a"} for c in train}), "v1", end)
    store = EventStore(tmp_path / "history.sqlite")
    future = _history(3, end=end + 3600).iloc[-60:]
    future.iloc[10:30] += 2.0  # twenty minutes far above the band
    # The history refuses writes (as a full disk or a read-only mount would).
    refuse_writes(store, True)
    with pytest.raises(RecordError, match="writing events fails"):
        tracker.ingest(_batch(future.iloc[:40]), float(end + 2400), store)
    assert store.query(signal="latency").total == 0
    assert tracker.log.error and "readonly" in tracker.log.error
    with pytest.raises(RecordError):  # still full: the rows keep waiting, nothing half-written
        tracker.ingest(_batch(future.iloc[40:50]), float(end + 3000), store)
    refuse_writes(store, False)
    tracker.ingest(_batch(future.iloc[50:]), float(end + 3600), store)
    (event,) = store.query(signal="latency").items
    assert event.start == pytest.approx(end + 600 + STEP, abs=2 * STEP)  # where it really began
    assert event.end is not None and event.end <= end + 35 * 60
    assert tracker.log.error is None and not tracker.log.pending
    store.close()


def test_health_reports_a_stage_until_it_works_again() -> None:
    cycles = CycleHealth()
    cycles.fail("pull", "rps", "malformed answer")
    cycles.fail("fit", "rps", "the fit worker died")
    ok, reason = cycles.verdict(models_missing=[], any_model=True)
    assert not ok and "pull rps: malformed answer" in reason and "fit rps" in reason
    cycles.succeed("pull", "rps")
    cycles.succeed("fit", "rps")
    assert cycles.verdict(models_missing=["errors"], any_model=True) == (
        False,
        "no model loaded for errors",
    )
    assert cycles.errors["pull"] == 1 and cycles.errors["fit"] == 1


def test_series_over_the_cap_are_refused_and_infinite_values_counted() -> None:
    end = 1_767_571_200.0
    frame = _history(0.1, end=end)
    wide = pd.concat({f'{{model="m{i}"}}': frame.iloc[:, 0] for i in range(5)}, axis=1)
    wide.iloc[3, 0] = np.inf
    tracker = SignalTracker(SIGNAL, stale_after=600, buffer_span=3600, max_series=3)
    labels = {c: {"model": c[8:10]} for c in wide.columns}
    tracker.ingest(SeriesBatch(wide, labels), end, None)
    assert len(tracker.series) == 3 and tracker.refused == 2
    assert tracker.invalid_points == 1
    assert tracker.buffer.shape[1] == 3 and not np.isinf(tracker.buffer.to_numpy()).any()


def test_a_series_without_a_model_says_what_it_waits_for() -> None:
    end = 1_767_571_200.0
    tracker = SignalTracker(SIGNAL, stale_after=600, buffer_span=3600)
    tracker.ingest(_batch(_history(0.25, end=end)), end, None)
    (status,) = tracker.statuses(min_span=86_400, next_fit=end + 120)
    assert status.model_version is None
    assert status.waiting_for == "history: 6 h of 1 d"
    assert status.ready_at == pytest.approx(end - 0.25 * 86_400 + 86_400)


# -- the history file -----------------------------------------------------------------------------
def test_an_unreadable_history_says_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    assert check_history(path) is None  # none yet: fine
    EventStore(path).close()
    assert check_history(path) is None
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"history\.sqlite is unreadable.*--reset-history"):
        check_history(path)
    aside = check_history(path, reset=True)
    assert aside is not None and aside.read_bytes().startswith(b"this is not")
    assert not path.exists()
    EventStore(path).close()  # a new one begins
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


# -- the fit worker -------------------------------------------------------------------------------
def _offline(tmp_path: Path, end: float, **extra: object) -> tuple[DetectorSettings, FileSource]:
    """Settings for one latency signal fitted from three days written to a CSV file."""
    frame = _history(3, end=end).rename(columns=lambda c: "latency")
    frame.to_csv(tmp_path / "history.csv", index_label="timestamp")
    settings = load_settings(
        None,
        registry_root=tmp_path / "models",
        history_db=tmp_path / "history.sqlite",
        min_train_span="1d",
        signals=[{"name": "latency", "query": "x", "step": 60, "direction": "up"}],
        **extra,
    )
    return settings, FileSource(tmp_path / "history.csv")


def test_a_killed_fit_worker_is_replaced(tmp_path: Path) -> None:
    end = 1_767_571_200.0
    settings, source = _offline(tmp_path, end)
    registry = ModelRegistry(settings.registry_root)
    fits = FitScheduler(settings, source, registry)
    try:
        fits.request(["latency"], end)
        assert fits.wait(120)
        (first,) = fits.collect()
        assert first.version is not None
        # Killed as the out-of-memory killer would, while idle: the pool is broken.
        for pid in list(fits._executor._processes):
            os.kill(pid, signal.SIGKILL)
        time.sleep(1.0)
        job = fits.request(["latency"], end)  # a new worker takes the fit
        assert fits.wait(120)
        (second,) = fits.collect()
        assert second.job == job and second.version is not None, second.error
    finally:
        fits.shutdown()


def test_the_fit_worker_dies_with_the_service(tmp_path: Path) -> None:
    """``kill -9`` of the parent leaves no worker behind."""
    script = (
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from detector.service.scheduler import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),"
        " initializer=die_with_parent)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    time.sleep(60)\n"
    )
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        worker = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        for _ in range(100):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_service_reports_malformed_answers_within_one_cycle(garbage_api, tmp_path) -> None:
    url, _ = garbage_api
    settings = load_settings(
        None,
        prometheus={"url": url, "timeout": 2},
        registry_root=tmp_path / "models",
        history_db=tmp_path / "history.sqlite",
        signals=[{"name": "latency", "query": "x", "direction": "up"}],
    )
    service = DetectorService(settings, clock=time.time, executor=ThreadPoolExecutor(1))
    try:
        service.run_cycle()
        ok, reason = service.health()
        assert not ok and reason.startswith("pull latency: latency: malformed answer")
        stats = service.run_stats()
        assert not stats.up and stats.query_errors == {"latency": 1}
        assert stats.cycle_errors["pull"] == 1
    finally:
        service.stop()


def test_fits_keep_only_the_newest_versions(tmp_path: Path) -> None:
    end = 1_767_571_200.0
    settings, source = _offline(tmp_path, end, model_versions_kept=2)
    registry = ModelRegistry(settings.registry_root)
    published = [
        train_signal(settings, settings.signals[0], source, registry, end=end).version
        for _ in range(4)
    ]
    kept = [v.version for v in registry.versions("latency")]
    assert sorted(kept) == sorted(published[-2:])
    assert registry.current("latency").version == published[-1]
