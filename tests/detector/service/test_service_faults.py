"""Reliability of the detector service against a real Prometheus that fails in real ways.

Outages are real (the server is killed and restarted on the same data), slowness is real (the
process is frozen with SIGSTOP, so connections hang until the client's timeout), errors are
real (PromQL the server rejects), and odd data is real (counter resets, NaN and Inf samples,
series that appear late) — written into the TSDB.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.history import daily_series, grid_times
from support.servers import Series
from support.service import STEP, Clock, fitted, history, make_service, settings_for

from detector.core.timeutil import seconds
from detector.service.exporter import ServiceCollector

pytestmark = pytest.mark.integration


@pytest.fixture
def now() -> float:
    return float(np.floor(time.time() / STEP) * STEP)


def _metrics(service, clock) -> CollectorRegistry:
    registry = CollectorRegistry()
    ServiceCollector(service, registry, clock=clock)
    return registry


def test_outage_marks_stale_backs_off_and_recovers_without_a_gap(prometheus_factory, tmp_path, now):
    prom = prometheus_factory(backfill=history(now - 60))
    clock = Clock(now - 3600)
    service = fitted(make_service(settings_for(prom.url, tmp_path), clock))
    try:
        before = clock.now
        prom.kill()
        for _ in range(6):
            clock.now += STEP
            service.run_cycle()
        metrics = _metrics(service, clock)
        assert metrics.get_sample_value("llmwatch_up") == 0.0
        errors = sum(
            metrics.get_sample_value("llmwatch_query_errors_total", {"signal": s}) or 0.0
            for s in ("latency", "errors")
        )
        # One probe per cycle at most, and fewer as the backoff grows: 6 cycles, < 6 queries.
        assert 1 <= errors < 6
        assert all(s.stale for s in service.series()) and service.series()
        assert (
            metrics.get_sample_value(
                "llmwatch_anomaly_score",
                {"signal": "latency", "detector": "ensemble", "model": "a"},
            )
            is None
        )
        ok, reason = service.health()
        assert not ok and "unreachable" in reason
        assert service.store.query().total == 0  # no anomaly from the missing data
        prom.start()  # same data folder: the history is still there
        for _ in range(6):  # the backoff ends within a few cycles
            clock.now += STEP
            service.run_cycle()
        assert service.health() == (True, "ok")
        assert _metrics(service, clock).get_sample_value("llmwatch_up") == 1.0
        assert not any(s.stale for s in service.series())
        buffer = service.trackers["latency"].buffer
        t = seconds(buffer.index)
        covered = t[(t > before) & (t <= clock.now)]
        # Every minute of the outage was pulled and scored once Prometheus was back.
        assert np.array_equal(covered, grid_times(before + 1, clock.now, STEP))
        assert service.store.query().total == 0
    finally:
        service.stop()


def test_slow_prometheus_times_out_and_recovers(prometheus_factory, tmp_path, now):
    prom = prometheus_factory(backfill=history(now - 60, days=1.5))
    clock = Clock(now - 600)
    settings = settings_for(prom.url, tmp_path, prometheus={"url": prom.url, "timeout": 1})
    service = make_service(settings, clock)
    try:
        service.run_cycle()
        assert service.series()
        prom.pause()
        clock.now += STEP
        started = time.monotonic()
        service.run_cycle()
        # One signal waits for the timeout; the rest are skipped, not each waited for.
        assert time.monotonic() - started < 5
        ok, reason = service.health()
        assert not ok and "timed out" in reason
        assert _metrics(service, clock).get_sample_value("llmwatch_up") == 0.0
        prom.resume()
        for _ in range(3):
            clock.now += STEP
            service.run_cycle()
        assert _metrics(service, clock).get_sample_value("llmwatch_up") == 1.0
    finally:
        prom.resume()
        service.stop()


def test_rejected_query_is_counted_and_empty_signal_waits(prometheus_factory, tmp_path, now):
    prom = prometheus_factory(backfill=history(now - 60))
    signals = [
        {"name": "latency", "query": "llmwatch:latency_p95_seconds", "direction": "up"},
        {"name": "broken", "query": "rate(llmwatch:error_ratio[5m]"},
        {"name": "nothing_yet", "query": "llmwatch:gpu_memory_used_mb"},
    ]
    clock = Clock(now - 600)
    service = fitted(make_service(settings_for(prom.url, tmp_path, signals=signals), clock))
    try:
        metrics = _metrics(service, clock)
        assert metrics.get_sample_value("llmwatch_query_errors_total", {"signal": "broken"}) >= 1
        assert metrics.get_sample_value("llmwatch_up") == 0.0
        ok, reason = service.health()
        assert not ok and "broken" in reason and "refused" in reason
        # A rejected query does not stop the others, and a signal with no data is just empty.
        assert {s.signal for s in service.series()} == {"latency"}
        assert not any(s.stale for s in service.series("latency"))
        assert service.series("nothing_yet") == []
        models = {m.signal: m for m in service.models()}
        assert models["latency"].version and models["nothing_yet"].version is None
    finally:
        service.stop()


def test_counter_reset_nan_inf_and_a_late_series_raise_nothing(prometheus_factory, tmp_path, now):
    t = grid_times(now - 3 * 86_400, now - 60, STEP)
    rate = daily_series("x", {}, t, base=5.0, seed=4).values
    counter = np.cumsum(rate * STEP)
    reset = t.size - 30
    counter[reset:] -= counter[reset - 1] - 3.0  # the process restarted: counting from 3 again
    gauge = daily_series("llmwatch:latency_p95_seconds", {"model": "a"}, t, seed=5)
    gauge.values[-25] = np.nan
    gauge.values[-20] = np.inf
    gauge.values[-15] = -np.inf
    late = daily_series("llmwatch:latency_p95_seconds", {"model": "late"}, t[-20:], seed=6)
    series = [Series("llmwatch_test_requests_total", {}, t, counter), gauge, late]
    prom = prometheus_factory(backfill=series)
    signals = [
        {"name": "rps", "query": "rate(llmwatch_test_requests_total[3m])", "direction": "both"},
        {"name": "latency", "query": "llmwatch:latency_p95_seconds", "direction": "both"},
    ]
    clock = Clock(now - 45 * STEP)
    service = fitted(make_service(settings_for(prom.url, tmp_path, signals=signals), clock))
    try:
        assert {s.labels.get("model") for s in service.series("latency")} == {"a"}
        scores = []
        for _ in range(44):
            clock.now += STEP
            service.run_cycle()
            scores += [s.point.score for s in service.series()]
            a = next(s for s in service.series("latency") if s.labels == {"model": "a"})
            assert a.point.actual is None or np.isfinite(a.point.actual)
        assert max(scores) < 0.95
        assert service.store.query().total == 0
        late_status = next(s for s in service.series("latency") if s.labels == {"model": "late"})
        # Tracked as soon as it appears, with its value; scored once a refit covers it.
        assert late_status.point.actual is not None and late_status.model_version is None
        assert not late_status.anomalous and service.trackers["latency"].untrained() == 1
        metrics = _metrics(service, clock)
        late = {"signal": "latency", "model": "late"}
        assert (
            metrics.get_sample_value("llmwatch_anomaly_score", {**late, "detector": "ensemble"})
            is None
        )
    finally:
        service.stop()
