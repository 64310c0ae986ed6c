"""What the running detector service knows right now, as plain records.

The service (:mod:`detector.service.loop`) keeps these up to date each cycle; the REST API
(:mod:`detector.service.api`) only reads them through :class:`ServiceView`, so the two meet at this
one interface and the API can be tested against any implementation of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ActiveAnomaly", "ModelStatus", "RetrainUnavailable", "SeriesStatus", "ServiceView"]


@dataclass(frozen=True, kw_only=True)
class SeriesStatus:
    """The latest scored point of one series (a signal's query result, keyed by its labels)."""

    signal: str
    labels: dict[str, str]
    timestamp: float | None  # unix seconds of the last scored point; None before the first one
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    score: float  # calibrated anomaly score in [0, 1]
    detector_scores: dict[str, float]  # family name -> calibrated score
    anomalous: bool
    stale: bool  # no fresh data this cycle (source down, series gone quiet)
    model_version: str | None
    # Highest score of the series' open event (its onset's, as scores are held during it);
    # None while no event is open.
    event_peak: float | None = None
    # A series without a model: what it waits for (history, a fit) and when one is expected.
    waiting_for: str | None = None
    ready_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class ActiveAnomaly:
    """An anomaly open now: one series whose hysteresis decision is anomalous."""

    event_id: int
    signal: str
    labels: dict[str, str]
    since: float
    peak_score: float
    score: float
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    detectors: list[str]  # families whose score crossed the threshold
    # Isolation forest only: feature name -> contribution, largest first.
    contributions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    """The model version a signal is served with."""

    signal: str
    version: str | None
    created_at: float | None
    training_start: float | None
    training_end: float | None
    series: int  # series the model covers
    detectors: list[str]
    evaluation: dict[str, float] = field(default_factory=dict)


class RetrainUnavailable(RuntimeError):
    """A retrain cannot be queued (unknown signal, or one already running); the message says why."""


class ServiceView(Protocol):
    """Read access to the service's state, plus the one action the API may take."""

    def series(self, signal: str | None = None) -> list[SeriesStatus]:
        """Latest status of every tracked series (of one signal when given)."""

    def signal_names(self) -> list[str]:
        """Configured signal names, in configuration order."""

    def active_anomalies(self) -> list[ActiveAnomaly]:
        """Anomalies open now, highest score first."""

    def models(self) -> list[ModelStatus]:
        """The model served for each signal."""

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` when Prometheus answers and every signal has a model, else why not."""

    def request_retrain(self, signal: str | None = None) -> str:
        """Queue a refit (of one signal, or all); returns a job id. Never blocks."""
