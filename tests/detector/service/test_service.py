"""The detector service against a real Prometheus (and VictoriaMetrics) with days of history."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from support.history import daily_series, grid_times
from support.service import (
    STEP,
    Clock,
    fitted,
    history,
    make_service,
    refuse_writes,
    settings_for,
)

from detector.registry.store import ModelRegistry
from detector.service.api import create_api
from detector.service.config import load_settings
from detector.service.exporter import ServiceCollector
from detector.service.source import PrometheusSource, series_key
from detector.service.training import train_signal

pytestmark = pytest.mark.integration


@pytest.fixture
def now() -> float:
    return float(np.floor(time.time() / STEP) * STEP)


def _run_through_spike(url: str, tmp_path, now: float) -> None:
    start = now - 3600
    spike = start + 20 * 60
    clock = Clock(start)
    service = fitted(make_service(settings_for(url, tmp_path), clock))
    try:
        assert {m.signal: m.series for m in service.models()} == {"latency": 2, "errors": 1}
        assert service.health() == (True, "ok")
        peak = 0.0
        for _ in range(40):
            clock.now += STEP
            service.run_cycle()
            a = next(s for s in service.series("latency") if s.labels == {"model": "a"})
            peak = max(peak, a.point.score)
            if clock.now == spike + STEP:
                # Past its onset the spike's score is held just below 0.95 (refractory).
                assert a.anomalous and 0.9 < a.family_scores["seasonal"] < 0.95
                assert [x.labels for x in service.active_anomalies()] == [{"model": "a"}]
        assert peak > 0.99
        assert all(not s.anomalous for s in service.series() if s.labels != {"model": "a"})
        registry = CollectorRegistry()
        ServiceCollector(service, registry, clock=clock)
        labels = {"signal": "latency", "detector": "ensemble", "model": "b"}
        assert 0.0 <= registry.get_sample_value("llmwatch_anomaly_score", labels) < 0.95
        assert registry.get_sample_value("llmwatch_up") == 1.0
        assert registry.get_sample_value("llmwatch_expected_value", {"signal": "errors"}) > 0
        events = service.store.query(signal="latency").items
        assert len(events) == 1 and events[0].labels == {"model": "a"}
        assert events[0].start == pytest.approx(spike, abs=STEP) and events[0].end is not None
    finally:
        service.stop()


def test_pull_score_export_record_against_prometheus(prometheus_factory, tmp_path, now):
    prom = prometheus_factory(backfill=history(now - 60, spike_at=now - 3600 + 20 * 60))
    _run_through_spike(prom.url, tmp_path, now)


def test_the_same_against_victoria_metrics(vm_factory, tmp_path, now):
    vm = vm_factory(series=history(now - 60, spike_at=now - 3600 + 20 * 60))
    _run_through_spike(vm.url, tmp_path, now)


def test_restart_resumes_the_open_event_without_duplicating_it(prometheus_factory, tmp_path, now):
    start = now - 3600
    spike = start + 20 * 60
    prom = prometheus_factory(backfill=history(now - 60, spike_at=spike, spike_len=5))
    clock = Clock(start)
    first = fitted(make_service(settings_for(prom.url, tmp_path), clock))
    while clock.now < spike:
        clock.now += STEP
        first.run_cycle()
    (open_event,) = first.store.open_events()
    first.stop()
    # Down for two minutes while the anomaly goes on; the restarted service scores the missed
    # rows and continues the event it finds open.
    clock.now += 2 * STEP
    second = make_service(settings_for(prom.url, tmp_path), clock)
    try:
        second.run_cycle()
        (active,) = second.active_anomalies()
        assert active.event_id == open_event.id
        for _ in range(10):
            clock.now += STEP
            second.run_cycle()
        events = second.store.query(signal="latency").items
        assert [e.id for e in events] == [open_event.id]
        assert events[0].end is not None and events[0].end > spike + 2 * STEP
    finally:
        second.stop()


def test_hot_reload_swaps_new_versions_and_refuses_corrupt_ones(
    prometheus_factory, tmp_path, now, caplog
):
    prom = prometheus_factory(backfill=history(now - 60))
    clock = Clock(now - 3600)
    settings = settings_for(prom.url, tmp_path)
    service = fitted(make_service(settings, clock))
    try:
        served = {m.signal: m.version for m in service.models()}
        # Someone else (a notebook, `llmwatch train`) publishes a newer version.
        registry = ModelRegistry(settings.registry_root)
        source = PrometheusSource(settings.prometheus)
        newer = train_signal(settings, settings.signal("latency"), source, registry, end=clock.now)
        clock.now += STEP
        service.run_cycle()
        assert {m.signal: m.version for m in service.models()}["latency"] == newer.version
        # A newer version whose artifact was damaged after publishing is refused.
        broken = train_signal(settings, settings.signal("latency"), source, registry, end=clock.now)
        blob = bytearray(broken.artifact_path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        broken.artifact_path.write_bytes(bytes(blob))
        clock.now += STEP
        with caplog.at_level(logging.ERROR, logger="detector.service.loop"):
            service.run_cycle()
        assert {m.signal: m.version for m in service.models()}["latency"] == newer.version
        assert "sha256" in caplog.text and broken.version in caplog.text
        assert service.series("latency")[0].model_version == newer.version
        # A rollback is noticed like a new version.
        registry.rollback("latency", served["latency"])
        clock.now += STEP
        service.run_cycle()
        assert {m.signal: m.version for m in service.models()}["latency"] == served["latency"]
    finally:
        service.stop()


def test_shards_cover_every_series_exactly_once(prometheus_factory, tmp_path, now):
    t = grid_times(now - 7200, now - 60, STEP)
    series = [
        daily_series("llmwatch:requests_per_second", {"model": f"m{i}", "gpu": str(i % 4)}, t)
        for i in range(40)
    ]
    prom = prometheus_factory(backfill=series)
    owned = []
    for index in range(3):
        settings = settings_for(
            prom.url,
            tmp_path / str(index),
            shard=f"{index}/3",
            signals=[{"name": "rps", "query": "llmwatch:requests_per_second"}],
        )
        service = make_service(settings, Clock(now))
        try:
            service.run_cycle()
            owned.append({series_key(s.labels) for s in service.series("rps")})
        finally:
            service.stop()
    every = {series_key(s.labels) for s in series}
    assert sorted(k for keys in owned for k in keys) == sorted(every)
    assert all(len(keys) > 5 for keys in owned)  # the hash spreads them


def test_settings_pick_the_shard_and_model_folder():
    settings = load_settings(None, shard="2/4", signals=[{"name": "rps", "query": "x"}])
    assert str(settings.shard_spec) == "2/4"
    from detector.service.training import registry_name

    assert registry_name("rps", settings.shard_spec) == "rps.shard-2-of-4"


def test_isolation_forest_contributions_reach_the_api(prometheus_factory, tmp_path, now):
    start = now - 3600
    spike = start + 20 * 60
    prom = prometheus_factory(backfill=history(now - 60, spike_at=spike))
    # The joint forest's calibrated score tops out near exp(-1) on three days of history (no
    # training row is rarer than 1 in their number), so this signal alerts from 0.3.
    latency = {
        "name": "latency",
        "query": "llmwatch:latency_p95_seconds",
        "direction": "up",
        "detectors": ["seasonal", "iforest"],
        "thresholds": {"enter": 0.3, "leave": 0.2},
    }
    clock = Clock(start)
    service = fitted(make_service(settings_for(prom.url, tmp_path, signals=[latency]), clock))
    try:
        with TestClient(create_api(service, service.store, retrain_token=None)) as client:
            while clock.now < spike - STEP:
                clock.now += STEP
                service.run_cycle()
                assert service.active_anomalies() == []
            for _ in range(3):  # the spike's three points; the forest fires on the later ones
                clock.now += STEP
                service.run_cycle()
            (active,) = service.active_anomalies()
            assert active.labels == {"model": "a"} and "iforest" in active.families
            credit = active.contributions
            assert 0 < len(credit) <= 5
            assert list(credit.values()) == sorted(credit.values(), reverse=True)
            assert all(v > 0 for v in credit.values())
            # The spike is model a's: one of its features leads, and its features hold more credit
            # than model b's. Which of a's leads is a near tie that has gone both ways in CI (the
            # recent mean over the spike's points 0.154, the point's own residual 0.150).
            assert next(iter(credit)).startswith('{model="a"}:')
            mine = sum(v for k, v in credit.items() if k.startswith('{model="a"}:'))
            assert mine > sum(v for k, v in credit.items() if k.startswith('{model="b"}:'))
            (shown,) = client.get("/api/v1/anomalies").json()["data"]
            assert shown["labels"] == {"model": "a"}
            assert list(shown["contributions"]) == list(credit)
            assert shown["contributions"] == pytest.approx(credit)
            for _ in range(10):
                clock.now += STEP
                service.run_cycle()
            assert service.active_anomalies() == []
            (event,) = client.get("/api/v1/anomalies/history").json()["data"]
            assert not event["open"] and event["contributions"] == pytest.approx(credit)
    finally:
        service.stop()


def test_a_fault_held_ten_minutes_keeps_the_signal_anomalous_for_its_length(
    prometheus_factory, tmp_path, now
):
    """The event, ``anomalous`` and the active list last as long as the fault, then end."""
    start = now - 3600
    fault = start + 20 * 60
    prom = prometheus_factory(backfill=history(now - 60, spike_at=fault, spike_len=10))
    clock = Clock(start)
    service = fitted(make_service(settings_for(prom.url, tmp_path), clock))
    try:
        states = {}
        while clock.now < fault + 25 * STEP:
            clock.now += STEP
            service.run_cycle()
            a = next(s for s in service.series("latency") if s.labels == {"model": "a"})
            active = [x.labels for x in service.active_anomalies()]
            states[clock.now] = (a.anomalous, {"model": "a"} in active, a.event_peak)
        during = [states[fault + k * STEP] for k in range(10)]
        assert all(on and listed and peak > 0.95 for on, listed, peak in during), during
        after = [states[fault + k * STEP] for k in range(18, 25)]
        assert not any(on or listed or peak for on, listed, peak in after), after
        (event,) = service.store.query(signal="latency").items
        assert event.start == pytest.approx(fault, abs=STEP)
        assert fault + 9 * STEP <= event.end <= fault + 18 * STEP
    finally:
        service.stop()


def test_a_history_that_refuses_writes_is_reported_and_loses_no_event(
    prometheus_factory, tmp_path, now
):
    start = now - 3600
    spike = start + 20 * 60
    prom = prometheus_factory(backfill=history(now - 60, spike_at=spike, spike_len=5))
    clock = Clock(start)
    service = fitted(make_service(settings_for(prom.url, tmp_path), clock))
    try:
        refuse_writes(service.store, True)  # as a full disk would
        while clock.now < spike + 3 * STEP:
            clock.now += STEP
            service.run_cycle()
        ok, reason = service.health()
        assert not ok and reason.startswith("record latency: latency: writing events fails")
        assert service.store.query(signal="latency").total == 0
        # Scoring went on: the API shows the anomaly while its event waits to be written.
        a = next(s for s in service.series("latency") if s.labels == {"model": "a"})
        assert a.anomalous and not a.stale
        refuse_writes(service.store, False)
        for _ in range(10):
            clock.now += STEP
            service.run_cycle()
        assert service.health() == (True, "ok")
        (event,) = service.store.query(signal="latency").items
        assert event.start == pytest.approx(spike, abs=STEP) and event.end is not None
    finally:
        service.stop()
