"""The detector service's schedule: every interval pull → score → export → record events.

:class:`DetectorService` owns one :class:`~detector.service.series_state.SignalTracker` per signal
and runs cycles on a background thread (:meth:`~DetectorService.start`) or one at a time
(:meth:`~DetectorService.run_cycle`, with an injectable clock for tests). Fitting runs in a
worker (a separate process by default, so it never holds the scoring thread back) and publishes
to the model registry; the service installs what the registry serves, whoever published it, after
the registry has verified its checksum — a version that fails is logged and refused while the
previous model keeps serving. Readers (the REST API, the metrics collector) see an immutable
snapshot replaced at the end of each cycle, so they never wait for scoring.

Failure handling: a failed query marks the signal stale and ``llmwatch_up`` 0, is counted, and is
retried with exponential backoff; an unreachable server is probed once per cycle, not once per
signal. The next successful pull starts where the last one ended (up to ``max_backfill`` back),
so every row of an outage is pulled, and missing values never score as anomalies. The rows of
the outage and of ``recovery_settle`` after it count as missing: a Prometheus that was down
records its rules from incomplete windows at first (it evaluates them before its first scrape),
and those artefacts must not raise anomalies. An incident that outlasts them is still caught.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from detector.core.timeutil import seconds
from detector.registry.store import ModelRegistry
from detector.service.config import DetectorSettings
from detector.service.cycle_health import CycleHealth
from detector.service.event_log import RecordError
from detector.service.history import EventStore
from detector.service.model_keeper import ModelKeeper
from detector.service.peers import peer_anomalies
from detector.service.scheduler import FitScheduler
from detector.service.series_state import SignalTracker
from detector.service.source import PrometheusSource, SeriesBatch, Source, SourceError
from detector.service.views import (
    ActiveAnomaly,
    ModelStatus,
    RetrainUnavailable,
    RunStats,
    SeriesStatus,
)

__all__ = ["DetectorService"]

_log = logging.getLogger(__name__)

# Recent rows kept per signal so that a model fitted meanwhile can catch up without a query.
_BUFFER_S = 6 * 3600.0
_MAX_BACKOFF_S = 300.0


@dataclass(frozen=True)
class _Snapshot:
    series: dict[str, list[SeriesStatus]] = field(default_factory=dict)
    active: list[ActiveAnomaly] = field(default_factory=list)
    models: list[ModelStatus] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    health: tuple[bool, str] = (False, "starting: no cycle has run yet")


class DetectorService:
    """The running detector: implements :class:`~detector.service.views.ServiceView`.

    Parameters
    ----------
    settings : DetectorSettings
        The configuration.
    source, registry, store :
        Default to Prometheus at ``settings.prometheus``, the registry at
        ``settings.registry_root`` and the event history at ``settings.history_location``.
    clock : callable
        Unix seconds now.
    executor : Executor
        Where fits run; default a one-process pool (spawned, so it shares no locks).
    """

    def __init__(
        self,
        settings: DetectorSettings,
        *,
        source: Source | None = None,
        registry: ModelRegistry | None = None,
        store: EventStore | None = None,
        clock: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.shard = settings.shard_spec
        self.source = source if source is not None else PrometheusSource(settings.prometheus)
        self.registry = registry or ModelRegistry(settings.registry_root)
        self.store = (
            store
            if store is not None
            else EventStore(settings.history_location, shard=str(self.shard))
        )
        self.clock = clock
        self.fits = FitScheduler(settings, self.source, self.registry, executor)
        self.trackers = {
            s.name: SignalTracker(
                s,
                stale_after=settings.stale_after,
                buffer_span=_BUFFER_S,
                max_series=settings.max_series,
            )
            for s in settings.signals
        }
        self._order = settings.scoring_order()
        self._failures: Counter[str] = Counter()
        self._retry_at: dict[str, float] = {}
        self._settle_until: dict[str, float] = {}
        self._errors: Counter[str] = Counter()
        self.cycles = CycleHealth()
        self.keeper = ModelKeeper(
            settings=settings,
            source=self.source,
            registry=self.registry,
            fits=self.fits,
            trackers=self.trackers,
            cycles=self.cycles,
            owned=self._owned,
        )
        self._unreachable = False
        self._pruned_at = -math.inf
        self._snapshot = _Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the registry's models and the events left open by a previous run."""
        if self._started:
            return
        self._started = True
        # On a history replicas share, only this shard's events are this run's to resume.
        owned = self.shard.owns if self.shard.count > 1 else None
        opened: dict[str, list] = {}
        for event in self.store.open_events(owned):
            opened.setdefault(event.signal, []).append(event)
        now = self.clock()
        since = now - self.settings.max_backfill
        for name, tracker in self.trackers.items():
            # Where the previous run's recording reached: replayed rows before it add nothing.
            reached = self.store.recorded_until(name, since, owned)
            tracker.resume(opened.get(name, []), reached)
        self.keeper.load_current(now)

    def start(self) -> None:
        """Prepare, then run cycles every ``interval`` on a background thread."""
        self.prepare()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llmwatch-detector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop, the fit worker (pending fits are dropped) and the event store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.fits.shutdown()
        self.store.close()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_cycle()
            except Exception:  # the loop must outlive any one bad cycle
                _log.exception("scoring cycle failed")
            self._stop.wait(max(0.0, self.settings.interval - (time.monotonic() - started)))

    # -- one cycle ----------------------------------------------------------------------------
    def run_cycle(self) -> None:
        """Install finished fits and newer registry versions, pull, score, record, publish.

        A stage that fails for one signal is logged, counted and reported by ``/health`` until
        it works again (:mod:`detector.service.cycle_health`); the other signals go on.
        """
        self.prepare()
        began = time.perf_counter()
        now = self.clock()
        self.keeper.collect_jobs(now)
        self.keeper.watch_registry(now)
        self.keeper.schedule_fits(now)
        self._prune(now)
        all_ok, down = True, False
        for name in self._order:
            tracker = self.trackers[name]
            batch = None if down else self._pull(tracker, now)
            if batch is None:
                tracker.mark_failed()
                all_ok, down = False, down or self._unreachable
                continue
            den = tracker.signal.denominator
            rates = self.trackers[den].buffer if den is not None else None
            loads = {n: self.trackers[n].buffer for n in self.settings.load_signals(name)}
            try:
                tracker.ingest(self._owned(name, batch), now, self.store, rates, loads)
            except RecordError as exc:  # the rows stay queued; the next cycle writes them first
                _log.error("%s", exc)
                self.cycles.fail("record", name, str(exc))
                continue
            except Exception as exc:  # one signal's bug must not blind the others
                _log.exception("%s: scoring failed", name)
                tracker.mark_failed()
                self.cycles.fail("score", name, f"{type(exc).__name__}: {exc}")
                continue
            self.cycles.succeed("score", name)
            self.cycles.succeed("record", name)
        stats = RunStats(
            last_run=self.clock(),
            duration=time.perf_counter() - began,
            up=all_ok,
            query_errors=dict(self._errors),
            cycle_errors=dict(self.cycles.errors),
            invalid_points={n: t.invalid_points for n, t in self.trackers.items()},
            refused_series={n: t.refused for n, t in self.trackers.items()},
        )
        try:
            self._publish(stats)
        except Exception as exc:  # readers keep the last snapshot; /health says why
            _log.exception("publishing the cycle's state failed")
            self.cycles.fail("publish", "", f"{type(exc).__name__}: {exc}")
            self._snapshot = dataclasses.replace(
                self._snapshot, health=(False, "; ".join(self.cycles.problems()))
            )
        else:
            self.cycles.succeed("publish", "")

    def _pull(self, tracker: SignalTracker, now: float) -> SeriesBatch | None:
        """New rows of one signal, or None (the failure counted, backed off, reported)."""
        name = tracker.signal.name
        self._unreachable = False
        if now < self._retry_at.get(name, -math.inf):
            return None
        try:
            batch = self.source.fetch(tracker.signal, self._pull_start(tracker, now), now)
        except SourceError as exc:
            _log.warning("%s", exc)
            self._errors[name] += 1
            self._failures[name] += 1
            delay = self.settings.interval * 2 ** (self._failures[name] - 1)
            self._retry_at[name] = now + min(delay, max(_MAX_BACKOFF_S, self.settings.interval))
            self.cycles.fail("pull", name, f"{exc} (retrying with backoff)")
            self._unreachable = exc.unreachable
            return None
        self.cycles.succeed("pull", name)
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)
        if tracker.failing and self.settings.recovery_settle > 0:
            self._settle_until[name] = now + self.settings.recovery_settle
        return self._settled(name, batch)

    def _prune(self, now: float) -> None:
        """Once an hour, forget events older than ``history_retention``."""
        if now < self._pruned_at + 3600.0:
            return
        self._pruned_at = now
        try:
            removed = self.store.prune(ended_before=now - self.settings.history_retention)
        except Exception as exc:  # the next hour tries again; recording is what matters
            _log.warning("pruning the event history failed: %s", exc)
            return
        if removed:
            _log.info("removed %d events older than the history retention", removed)

    def _settled(self, name: str, batch: SeriesBatch) -> SeriesBatch:
        """``batch`` with the rows of an outage and of its settling time blanked."""
        until = self._settle_until.get(name)
        frame = batch.frame
        if until is None or not frame.shape[0]:
            return batch
        t = seconds(frame.index)
        if t[0] > until:
            del self._settle_until[name]
            return batch
        frame = frame.copy()
        frame.iloc[t <= until] = np.nan
        return SeriesBatch(frame, batch.labels)

    def _pull_start(self, tracker: SignalTracker, now: float) -> float:
        floor = now - self.settings.max_backfill
        if tracker.last_ts is not None:
            return max(tracker.last_ts + 1e-3, floor)
        model = tracker.model
        if model is not None and math.isfinite(model.seen_until):
            return max(model.seen_until + 1e-3, floor)
        return now - _BUFFER_S

    def _owned(self, signal: str, batch: SeriesBatch) -> SeriesBatch:
        if self.shard.count == 1:
            return batch
        keep = [k for k in batch.frame.columns if self.shard.owns(signal, batch.labels[k])]
        return SeriesBatch(batch.frame[keep], {k: batch.labels[k] for k in keep})

    # -- models -------------------------------------------------------------------------------
    # -- snapshot for readers -----------------------------------------------------------------
    def _publish(self, stats: RunStats) -> None:
        span = self.settings.min_train_span
        series = {
            name: t.statuses(min_span=span, next_fit=self.fits.next_fit(name))
            for name, t in self.trackers.items()
        }
        active = [a for t in self.trackers.values() for a in t.active()]
        active.sort(key=lambda a: a.point.score, reverse=True)
        models = [self._model_status(t) for t in self.trackers.values()]
        health = self.cycles.verdict(
            models_missing=[n for n, t in self.trackers.items() if t.series and t.model is None],
            any_model=any(t.model is not None for t in self.trackers.values()),
        )
        self._snapshot = _Snapshot(series, active, models, stats, health)

    @staticmethod
    def _model_status(tracker: SignalTracker) -> ModelStatus:
        model = tracker.model
        return ModelStatus(
            signal=tracker.signal.name,
            version=tracker.version,
            created_at=tracker.created_at,
            training_start=model.training_start if model else None,
            training_end=model.training_end if model else None,
            series=len(model.columns) if model else 0,
            families=model.families if model else [],
            evaluation=dict(model.evaluation) if model else {},
        )

    # -- ServiceView --------------------------------------------------------------------------
    def series(self, signal: str | None = None) -> list[SeriesStatus]:
        """Latest status of every tracked series (of one signal when given)."""
        snap = self._snapshot.series
        if signal is not None:
            return list(snap.get(signal, []))
        return [s for statuses in snap.values() for s in statuses]

    def signal_names(self) -> list[str]:
        """Configured signal names, in configuration order."""
        return [s.name for s in self.settings.signals]

    def active_anomalies(self) -> list[ActiveAnomaly]:
        """Anomalies open now, highest score first: this replica's, and where shards share the
        history, the other shards' open events (:mod:`detector.service.peers`)."""
        mine = self._snapshot.active
        if self.shard.count == 1:
            return list(mine)
        name = str(self.shard)
        peers = peer_anomalies(
            self.store, self.shard, now=self.clock(), stale_after=self.settings.stale_after
        )
        every = [replace(a, shard=name) for a in mine] + peers
        return sorted(every, key=lambda a: a.point.score, reverse=True)

    def models(self) -> list[ModelStatus]:
        """The model served for each signal."""
        return list(self._snapshot.models)

    def registry_root(self) -> Path:
        """The absolute folder of the model registry the service reads and publishes to."""
        return Path(self.registry.root).resolve()

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` when the source answers and every signal with data has a model."""
        return self._snapshot.health

    def run_stats(self) -> RunStats:
        """Figures about the last cycle, for the exporter."""
        return self._snapshot.stats

    def request_retrain(self, signal: str | None = None) -> str:
        """Queue a refit of one signal (or all); returns a job id. Never blocks."""
        names = [signal] if signal is not None else list(self.trackers)
        if signal is not None and signal not in self.trackers:
            raise RetrainUnavailable(
                f"unknown signal {signal!r}; configured: {list(self.trackers)}"
            )
        return self.fits.request(names, self.clock())

    def wait_fits(self, timeout: float | None = None) -> bool:
        """Block until the queued fits have finished (the next cycle installs them)."""
        return self.fits.wait(timeout)

    def job_status(self, job: str) -> str:
        """``"running"`` while any fit of the job is in flight, else ``"unknown"``."""
        return "running" if self.fits.job_running(job) else "unknown"
