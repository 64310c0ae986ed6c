"""Pydantic schemas of the REST API: ``XPublic`` is what a response shows, ``XCreate`` a request.

Times are ISO-8601 in UTC; values that are not finite (a NaN sample) are shown as ``null``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "AnomaliesPublic",
    "AnomalyPublic",
    "EventPublic",
    "EventsPublic",
    "HealthPublic",
    "ModelPublic",
    "ModelsPublic",
    "RetrainCreate",
    "RetrainJobPublic",
    "SeriesPublic",
    "SignalPublic",
    "SignalsPublic",
    "utc",
]

SIGNAL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def utc(ts: float | None) -> datetime | None:
    """A unix time as an aware UTC datetime (None stays None, as do non-finite times)."""
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, tz=UTC)


Value = Annotated[float | None, BeforeValidator(_finite_or_none)]
Score = Annotated[float, Field(description="calibrated anomaly score in [0, 1]")]


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class _PointValues(_Public):
    """The values of a :class:`~detector.core.point.ScoredPoint`, as every response shows them."""

    actual: Value
    expected: Value
    lower: Value
    upper: Value


class _Expectation(_PointValues):
    """A series' latest values, with what its expectation is for."""

    expected_for: Literal["this load", "this time of day"] = Field(
        description="'this load': the expectation follows the load signals in explained_by"
    )
    explained_by: list[str] = Field(
        description="load signals the expectation follows (request rate, tokens per request)"
    )
    load_factor: Value = Field(
        description="the load's effect on the expectation (1: the training window's typical "
        "load; 2: twice the latency of typical load expected)"
    )


class AnomalyPublic(_Expectation):
    """An anomaly open now on one series; its values are the series' latest."""

    event_id: int
    signal: str
    labels: dict[str, str]
    since: datetime
    peak_score: Score
    score: Score
    detectors: list[str] = Field(description="families whose score is above the threshold")
    contributions: dict[str, float] = Field(
        description="isolation forest: feature -> contribution, largest first"
    )
    summary: str = Field(
        description="e.g. 'latency_p99_seconds 5.2, expected 2.1 at this load (band 1.8-2.5)'"
    )
    shard: str | None = Field(
        None, description="the replica that scores the series, 'i/n' (null: one replica)"
    )
    stale: bool = Field(
        False,
        description="another replica's anomaly that replica has not updated for stale_after: "
        "it has stopped, and the values are its last",
    )


class AnomaliesPublic(_Public):
    data: list[AnomalyPublic]
    count: int


class EventPublic(_PointValues):
    """One recorded anomaly event; ``end`` is null while it is open; its values are the peak's."""

    id: int
    signal: str
    labels: dict[str, str]
    start: datetime
    end: datetime | None
    open: bool
    score: Score = Field(description="score at the last update")
    peak_score: Score
    peak_at: datetime
    detectors: list[str] = Field(description="every family that fired during the event")
    contributions: dict[str, float]
    model_version: str | None
    shard: str | None = Field(None, description="the replica that recorded it, 'i/n'")


class EventsPublic(_Public):
    """A page of events, newest first; ``count`` is the number matching in all."""

    data: list[EventPublic]
    count: int
    limit: int
    offset: int
    next_offset: int | None


class SeriesPublic(_Expectation):
    """The latest scored point of one series of a signal."""

    labels: dict[str, str]
    timestamp: datetime | None
    score: Score
    detector_scores: dict[str, float]
    anomalous: bool
    stale: bool
    model_version: str | None
    # Without a model: what the series waits for and when a model is expected.
    waiting_for: str | None = None
    ready_at: datetime | None = None


class SignalPublic(_Public):
    name: str
    series: list[SeriesPublic]


class SignalsPublic(_Public):
    """A page of every signal's series, in configuration order (``series_total`` in all)."""

    data: list[SignalPublic]
    count: int
    series_total: int
    limit: int
    offset: int


class ModelPublic(_Public):
    """The model version a signal is served with (nulls before its first model)."""

    signal: str
    version: str | None
    created_at: datetime | None
    training_start: datetime | None
    training_end: datetime | None
    series: int
    detectors: list[str]
    evaluation: dict[str, Any]


class ModelsPublic(_Public):
    data: list[ModelPublic]
    count: int
    registry_root: str = Field(
        description="absolute folder of the model registry the service reads and publishes to"
    )


class RetrainCreate(BaseModel):
    """Which signal to refit; all of them when ``signal`` is omitted."""

    model_config = ConfigDict(extra="forbid")

    signal: str | None = Field(None, pattern=SIGNAL_PATTERN)


class RetrainJobPublic(_Public):
    job_id: str
    signal: str | None
    status: Literal["queued"] = "queued"


class HealthPublic(_Public):
    status: Literal["ok", "unavailable"]
    reason: str
