"""The detector service's schedule: every interval pull → score → export → record events.

:class:`DetectorService` owns one :class:`~detector.tracker.SignalTracker` per signal and runs
cycles on a background thread (:meth:`~DetectorService.start`) or one at a time
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

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from detector.exporter import RunStats
from detector.history import EventStore
from detector.model import SignalModel, registry_name
from detector.registry import ModelRegistry, ModelVersion, RegistryError
from detector.scheduler import FitScheduler
from detector.signals import DetectorSettings
from detector.source import PrometheusSource, SeriesBatch, Source, SourceError
from detector.status import ActiveAnomaly, ModelStatus, RetrainUnavailable, SeriesStatus
from detector.timeutil import seconds
from detector.tracker import SignalTracker

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
    """The running detector: implements :class:`~detector.status.ServiceView`.

    Parameters
    ----------
    settings : DetectorSettings
        The configuration.
    source, registry, store :
        Default to Prometheus at ``settings.prometheus``, the registry at
        ``settings.registry_root`` and the event history at ``settings.history_db``.
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
        self.store = store if store is not None else EventStore(settings.history_db)
        self.clock = clock
        self.fits = FitScheduler(settings, self.source, self.registry, executor)
        self.trackers = {
            s.name: SignalTracker(s, stale_after=settings.stale_after, buffer_span=_BUFFER_S)
            for s in settings.signals
        }
        self._order = settings.scoring_order()
        self._fingerprint: dict[str, str] = {}
        self._refused: set[str] = set()
        self._failures: Counter[str] = Counter()
        self._retry_at: dict[str, float] = {}
        self._settle_until: dict[str, float] = {}
        self._errors: Counter[str] = Counter()
        self._last_error = ""
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
        opened: dict[str, list] = {}
        for event in self.store.open_events():
            opened.setdefault(event.signal, []).append(event)
        now = self.clock()
        self._fingerprint = dict(self.registry.fingerprint())
        for name, tracker in self.trackers.items():
            # Where the previous run's recording reached: replayed rows before it add nothing.
            recent = self.store.query(
                signal=name, start=now - self.settings.max_backfill, limit=500
            )
            marks = [max(e.updated, e.end or e.updated) for e in recent.items]
            tracker.resume(opened.get(name, []), max(marks, default=-math.inf))
            try:
                loaded = self.registry.load_current(registry_name(name, self.shard))
            except RegistryError as exc:
                _log.info("%s: no model yet (%s); fitting one", name, exc)
                self.fits.set_next(name, now)
                continue
            self._install(tracker, loaded.model, loaded.version, now)
            self.fits.set_next(name, loaded.version.created_at + self.settings.retrain_interval)

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
        """Install finished fits and newer registry versions, pull, score, record, publish."""
        self.prepare()
        began = time.perf_counter()
        now = self.clock()
        self._collect_jobs(now)
        self._watch_registry(now)
        self._schedule_fits(now)
        all_ok, down = True, False
        for name in self._order:
            tracker = self.trackers[name]
            if down or now < self._retry_at.get(name, -math.inf):
                tracker.mark_failed()
                all_ok = False
                continue
            start = self._pull_start(tracker, now)
            try:
                batch = self.source.fetch(tracker.signal, start, now)
            except SourceError as exc:
                _log.warning("%s", exc)
                self._errors[name] += 1
                self._failures[name] += 1
                delay = self.settings.interval * 2 ** (self._failures[name] - 1)
                self._retry_at[name] = now + min(delay, max(_MAX_BACKOFF_S, self.settings.interval))
                tracker.mark_failed()
                all_ok, down, self._last_error = False, exc.unreachable, str(exc)
                continue
            self._failures.pop(name, None)
            self._retry_at.pop(name, None)
            if tracker.failing and self.settings.recovery_settle > 0:
                self._settle_until[name] = now + self.settings.recovery_settle
            batch = self._settled(name, batch)
            den = tracker.signal.denominator
            rates = self.trackers[den].buffer if den is not None else None
            tracker.ingest(self._owned(name, batch), now, self.store, rates)
        stats = RunStats(
            last_run=self.clock(),
            duration=time.perf_counter() - began,
            up=all_ok,
            query_errors=dict(self._errors),
        )
        if all_ok:
            self._last_error = ""
        self._publish(stats, self._last_error)

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
    def _install(
        self, tracker: SignalTracker, model: object, version: ModelVersion, now: float
    ) -> bool:
        name = tracker.signal.name
        if not isinstance(model, SignalModel) or model.signal != name:
            _log.error(
                "refusing %s/%s: not a model of signal %r", version.signal, version.version, name
            )
            self._refused.add(version.version)
            return False
        older = None
        start = tracker.catch_up_start(model)
        if start is not None:
            try:
                first = max(start, now - self.settings.max_backfill)
                older = self._owned(name, self.source.fetch(tracker.signal, first, now)).frame
            except SourceError as exc:
                _log.warning("%s: catching the new model up failed: %s", name, exc)
        tracker.install(model, version.version, version.created_at, older)
        _log.info("%s: serving model %s (%d series)", name, version.version, len(model.columns))
        return True

    def _watch_registry(self, now: float) -> None:
        # One listing, compared and kept: a version added meanwhile shows up next cycle.
        latest = dict(self.registry.fingerprint())
        changed = {
            k
            for k in latest.keys() | self._fingerprint.keys()
            if latest.get(k) != self._fingerprint.get(k)
        }
        self._fingerprint = latest
        if not changed:
            return
        for name, tracker in self.trackers.items():
            folder = registry_name(name, self.shard)
            if folder not in changed:
                continue
            current = self.registry.current(folder)
            if current is None or current.version in (tracker.version, *self._refused):
                continue
            try:
                loaded = self.registry.load(current)
            except RegistryError as exc:
                _log.error(
                    "refusing %s/%s, keeping %s: %s", folder, current.version, tracker.version, exc
                )
                self._refused.add(current.version)
                continue
            self._install(tracker, loaded.model, loaded.version, now)

    def _collect_jobs(self, now: float) -> None:
        for result in self.fits.collect():
            tracker, version = self.trackers[result.signal], result.version
            if version is None:
                self.fits.set_next(result.signal, now + self._young_delay(tracker, now))
                continue
            self.fits.set_next(result.signal, now + self.settings.retrain_interval)
            if version.version == tracker.version:
                continue
            try:
                loaded = self.registry.load(version)
            except RegistryError as exc:
                _log.error("refusing the model just fitted for %s: %s", result.signal, exc)
                self._refused.add(version.version)
                continue
            self._install(tracker, loaded.model, loaded.version, now)

    def _young_delay(self, tracker: SignalTracker, now: float) -> float:
        # Like the backtest: while history is short, refit whenever it has about doubled.
        firsts = [s.first_seen for s in tracker.series.values()]
        age = now - min(firsts) if firsts else 0.0
        return min(self.settings.retrain_interval, max(10 * self.settings.interval, age))

    def _schedule_fits(self, now: float) -> None:
        # Series the model does not cover yet bring the next fit forward, as history doubles.
        earliest = {
            name: (t.created_at or now) + self._young_delay(t, now)
            for name, t in self.trackers.items()
            if t.model is not None and t.untrained()
        }
        self.fits.submit_due(now, earliest)

    # -- snapshot for readers -----------------------------------------------------------------
    def _publish(self, stats: RunStats, reason: str) -> None:
        series = {name: t.statuses() for name, t in self.trackers.items()}
        active = [a for t in self.trackers.values() for a in t.active()]
        active.sort(key=lambda a: a.score, reverse=True)
        models = [self._model_status(t) for t in self.trackers.values()]
        missing = [n for n, t in self.trackers.items() if t.series and t.model is None]
        if not stats.up:
            health = (False, f"querying the source fails (retrying with backoff): {reason}")
        elif not any(t.model is not None for t in self.trackers.values()):
            health = (False, "no model loaded yet")
        elif missing:
            health = (False, f"no model loaded for {', '.join(missing)}")
        else:
            health = (True, "ok")
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
            detectors=model.families if model else [],
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
        """Anomalies open now, highest score first."""
        return list(self._snapshot.active)

    def models(self) -> list[ModelStatus]:
        """The model served for each signal."""
        return list(self._snapshot.models)

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
