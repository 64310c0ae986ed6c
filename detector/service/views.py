"""What the running detector service knows right now, as plain records.

The service (:mod:`detector.service.loop`) keeps these up to date each cycle; the REST API
(:mod:`detector.service.api`) and the exporter (:mod:`detector.service.exporter`) only read them
through :class:`ServiceView`, so they meet the service at this one interface and can be tested
against any implementation of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from detector.core.point import ScoredPoint

__all__ = [
    "ActiveAnomaly",
    "ModelStatus",
    "RetrainUnavailable",
    "RunStats",
    "SeriesStatus",
    "ServiceView",
]


@dataclass(frozen=True, kw_only=True)
class SeriesStatus:
    """The latest scored point of one series (a signal's query result, keyed by its labels)."""

    signal: str
    labels: dict[str, str]
    point: ScoredPoint  # the last point; ``point.at`` is None before the first one
    family_scores: dict[str, float]  # family name -> calibrated score
    anomalous: bool
    stale: bool  # no fresh data this cycle (source down, series gone quiet)
    model_version: str | None
    # Highest score of the series' open event (its onset's, as scores are held during it);
    # None while no event is open.
    event_peak: float | None = None
    # A series without a model: what it waits for (history, a fit) and when one is expected.
    waiting_for: str | None = None
    ready_at: float | None = None
    # The load signals the expectation follows (empty: time of day only), and the factor the
    # load of the last point put on it (1: the training window's typical load).
    explained_by: tuple[str, ...] = ()
    load_factor: float | None = None


@dataclass(frozen=True, kw_only=True)
class ActiveAnomaly:
    """An anomaly open now: one series whose hysteresis decision is anomalous."""

    event_id: int
    signal: str
    labels: dict[str, str]
    since: float
    peak_score: float
    point: ScoredPoint  # the series' last point
    families: list[str]  # families whose score crossed the threshold
    # Isolation forest only: feature name -> contribution, largest first.
    contributions: dict[str, float] = field(default_factory=dict)
    explained_by: tuple[str, ...] = ()  # as in SeriesStatus
    load_factor: float | None = None
    shard: str | None = None  # the replica that scores the series, "i/n"
    # Another replica's anomaly whose event it has not updated for stale_after: that replica
    # has stopped, and the values are its last.
    stale: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    """The model version a signal is served with."""

    signal: str
    version: str | None
    created_at: float | None
    training_start: float | None
    training_end: float | None
    series: int  # series the model covers
    families: list[str]
    evaluation: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunStats:
    """Figures about the service's own runs."""

    last_run: float | None = None  # unix seconds when the last cycle finished
    duration: float | None = None  # seconds the last cycle took
    up: bool = False  # the last cycle's queries all succeeded
    query_errors: dict[str, int] = field(default_factory=dict)  # signal -> failed queries so far
    cycle_errors: dict[str, int] = field(default_factory=dict)  # stage -> failures so far
    invalid_points: dict[str, int] = field(default_factory=dict)  # signal -> non-finite values
    refused_series: dict[str, int] = field(default_factory=dict)  # signal -> over max_series


class RetrainUnavailable(RuntimeError):
    """A retrain cannot be queued (unknown signal, or one already running); the message says why."""


class ServiceView(Protocol):
    """Read access to the service's state, plus the one action the API may take."""

    def series(self, signal: str | None = None) -> list[SeriesStatus]:
        """Latest status of every tracked series (of one signal when given)."""

    def signal_names(self) -> list[str]:
        """Configured signal names, in configuration order."""

    def active_anomalies(self) -> list[ActiveAnomaly]:
        """Anomalies open now, highest score first (of every shard, on a shared history)."""

    def models(self) -> list[ModelStatus]:
        """The model served for each signal."""

    def registry_root(self) -> Path:
        """The absolute folder of the model registry the service reads and publishes to."""

    def run_stats(self) -> RunStats:
        """Figures about the service's own runs (the exporter's)."""

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` when Prometheus answers and every signal has a model, else why not."""

    def request_retrain(self, signal: str | None = None) -> str:
        """Queue a refit (of one signal, or all); returns a job id. Never blocks."""
