"""Turning the service's records into response schemas (one function per record type)."""

from __future__ import annotations

import math
from typing import Any

from detector.core.point import ScoredPoint
from detector.service.api.schemas import (
    AnomalyPublic,
    EventPublic,
    ModelPublic,
    SeriesPublic,
    utc,
)
from detector.service.history import Event
from detector.service.views import ActiveAnomaly, ModelStatus, SeriesStatus

__all__ = [
    "anomaly_public",
    "event_public",
    "json_safe",
    "model_public",
    "series_public",
    "summary",
]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _score(x: float | None) -> float:
    # A score is always shown as a number: an unscorable point scores 0 by the contract.
    return float(x) if x is not None and math.isfinite(x) else 0.0


def _scores(values: dict[str, float]) -> dict[str, float]:
    return {str(k): _score(v) for k, v in values.items()}


def _values(point: ScoredPoint) -> dict[str, float | None]:
    return {
        "actual": point.actual,
        "expected": point.expected,
        "lower": point.lower,
        "upper": point.upper,
    }


def _expectation(s: SeriesStatus | ActiveAnomaly) -> dict[str, Any]:
    return {
        "expected_for": "this load" if s.explained_by else "this time of day",
        "explained_by": list(s.explained_by),
        "load_factor": s.load_factor,
    }


def summary(signal: str, point: ScoredPoint, explained_by: tuple[str, ...]) -> str:
    """One line an operator reads: the value, what was expected, and for what.

    >>> p = ScoredPoint(60.0, 5.2, 2.1, 1.8, 2.5, 0.99)
    >>> summary("latency_p99_seconds", p, ("requests_per_second",))
    'latency_p99_seconds 5.2, expected 2.1 at this load (band 1.8-2.5)'
    >>> summary("gpu_memory_used_mb", ScoredPoint(60.0, 19000.0, 17800.0, None, None, 1.0), ())
    'gpu_memory_used_mb 19,000, expected 17,800 for this time of day'
    """

    def num(x: float | None) -> str:
        if x is None:
            return "?"
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"

    basis = "at this load" if explained_by else "for this time of day"
    text = f"{signal} {num(point.actual)}, expected {num(point.expected)} {basis}"
    if point.lower is not None and point.upper is not None:
        text += f" (band {num(point.lower)}-{num(point.upper)})"
    return text


def anomaly_public(a: ActiveAnomaly) -> AnomalyPublic:
    """An active anomaly as the API shows it."""
    return AnomalyPublic(
        **_expectation(a),
        summary=summary(a.signal, a.point, a.explained_by),
        event_id=a.event_id,
        signal=a.signal,
        labels=a.labels,
        since=utc(a.since),
        peak_score=_score(a.peak_score),
        score=_score(a.point.score),
        **_values(a.point),
        detectors=list(a.families),
        contributions=_scores(a.contributions),
        shard=a.shard,
        stale=a.stale,
    )


def event_public(e: Event) -> EventPublic:
    """A recorded event; its values are those of its peak."""
    return EventPublic(
        id=e.id,
        signal=e.signal,
        labels=e.labels,
        start=utc(e.start),
        end=utc(e.end),
        open=e.is_open,
        score=_score(e.last.score),
        peak_score=_score(e.peak.score),
        peak_at=utc(e.peak.at),
        **_values(e.peak),
        detectors=list(e.families),
        contributions=_scores(e.contributions),
        model_version=e.model_version,
        shard=e.shard,
    )


def series_public(s: SeriesStatus) -> SeriesPublic:
    """The latest point of one series."""
    return SeriesPublic(
        **_expectation(s),
        labels=s.labels,
        timestamp=utc(s.point.at),
        score=_score(s.point.score),
        **_values(s.point),
        detector_scores=_scores(s.family_scores),
        anomalous=s.anomalous,
        stale=s.stale,
        model_version=s.model_version,
        waiting_for=s.waiting_for,
        ready_at=utc(s.ready_at),
    )


def model_public(m: ModelStatus) -> ModelPublic:
    """The model served for one signal."""
    return ModelPublic(
        signal=m.signal,
        version=m.version,
        created_at=utc(m.created_at),
        training_start=utc(m.training_start),
        training_end=utc(m.training_end),
        series=m.series,
        detectors=list(m.families),
        evaluation=json_safe(dict(m.evaluation)),
    )
