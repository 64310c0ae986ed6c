"""The metrics collector: DESIGN.md section 5's names, source labels, nothing frozen."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest

from detector.core.point import ScoredPoint
from detector.service.exporter import ServiceCollector, export_labels
from detector.service.views import ModelStatus, RunStats, SeriesStatus


def _status(labels: dict[str, str], *, stale: bool = False, version: str | None = "v1"):
    return SeriesStatus(
        signal="latency",
        labels=labels,
        point=ScoredPoint(100.0, actual=1.4, expected=1.0, lower=0.8, upper=1.2, score=0.97),
        family_scores={"seasonal": 0.97, "levelshift": 0.2},
        anomalous=True,
        stale=stale,
        model_version=version,
        event_peak=0.999,
        explained_by=("requests_per_second",),
        load_factor=1.3,
    )


@dataclass
class View:
    """Records as the service publishes them each cycle."""

    statuses: list[SeriesStatus] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)

    def series(self, signal=None):
        return list(self.statuses)

    def models(self):
        return [
            ModelStatus(
                signal="latency",
                version="v1",
                created_at=40.0,
                training_start=0.0,
                training_end=30.0,
                series=2,
                families=["seasonal", "levelshift"],
            ),
            ModelStatus(
                signal="errors",
                version=None,
                created_at=None,
                training_start=None,
                training_end=None,
                series=0,
                families=[],
            ),
        ]

    def run_stats(self):
        return self.stats


def test_every_metric_with_source_labels():
    view = View(
        [_status({"model": "a", "signal": "clash"})],
        RunStats(last_run=99.0, duration=0.25, up=True, query_errors={"errors": 3}),
    )
    registry = CollectorRegistry()
    ServiceCollector(view, registry, clock=lambda: 100.0)
    base = {"signal": "latency", "model": "a", "source_signal": "clash"}
    get = registry.get_sample_value
    assert get("llmwatch_anomaly_score", {**base, "detector": "ensemble"}) == 0.97
    assert get("llmwatch_anomaly_score", {**base, "detector": "levelshift"}) == 0.2
    assert get("llmwatch_expected_value", base) == 1.0
    assert get("llmwatch_expected_lower", base) == 0.8
    assert get("llmwatch_expected_upper", base) == 1.2
    assert get("llmwatch_anomalous", base) == 1.0
    assert get("llmwatch_event_peak_score", base) == 0.999
    assert get("llmwatch_load_factor", base) == 1.3
    info = {"signal": "latency", "detector": "seasonal", "version": "v1"}
    assert get("llmwatch_model_info", info) == 1.0
    assert get("llmwatch_model_age_seconds", {"signal": "latency"}) == 60.0
    assert get("llmwatch_model_age_seconds", {"signal": "errors"}) is None
    assert get("llmwatch_last_run_timestamp_seconds") == 99.0
    assert get("llmwatch_run_duration_seconds") == 0.25
    assert get("llmwatch_query_errors_total", {"signal": "errors"}) == 3.0
    assert get("llmwatch_up") == 1.0
    names = {m.name for m in registry.collect()}
    assert names == {
        "llmwatch_anomaly_score",
        "llmwatch_expected_value",
        "llmwatch_expected_lower",
        "llmwatch_expected_upper",
        "llmwatch_anomalous",
        "llmwatch_event_peak_score",
        "llmwatch_load_factor",
        "llmwatch_model_info",
        "llmwatch_model_age_seconds",
        "llmwatch_last_run_timestamp_seconds",
        "llmwatch_run_duration_seconds",
        "llmwatch_query_errors",
        "llmwatch_cycle_errors",
        "llmwatch_invalid_points",
        "llmwatch_series_refused",
        "llmwatch_up",
    }
    generate_latest(registry)  # the text exposition accepts every family


def test_gone_stale_and_unmodelled_series_are_not_exported():
    view = View([_status({"model": "a"}), _status({"model": "b"})])
    registry = CollectorRegistry()
    ServiceCollector(view, registry)
    assert registry.get_sample_value("llmwatch_anomalous", {"signal": "latency", "model": "b"}) == 1
    view.statuses = [
        _status({"model": "a"}),
        _status({"model": "c"}, version=None),
        _status({"model": "d"}, stale=True),
    ]
    get = registry.get_sample_value
    assert get("llmwatch_anomalous", {"signal": "latency", "model": "b"}) is None  # gone
    assert get("llmwatch_anomalous", {"signal": "latency", "model": "d"}) is None  # stale
    assert get("llmwatch_anomalous", {"signal": "latency", "model": "c"}) is None  # no model yet
    assert get("llmwatch_expected_value", {"signal": "latency", "model": "c"}) == 1.0
    assert get("llmwatch_up") == 0.0


def test_colliding_and_reserved_labels_are_prefixed():
    assert export_labels({"detector": "x", "version": "2", "__meta": "m", "gpu": "0"}) == {
        "source_detector": "x",
        "source_version": "2",
        "source_meta": "m",
        "gpu": "0",
    }
