"""Which model each signal's tracker serves: finished fits, registry versions, catch-up.

:class:`ModelKeeper` is the detector service's model side. It collects the fits the scheduler
finished and installs what they published, watches the registry for versions published
elsewhere (a notebook, ``llmwatch train``), refuses and remembers versions that fail to load
(the previous model keeps serving), catches a new model up on the rows it has not seen, and
queues the fits that are due. A failed fit is reported to the cycle's health until the next
fit of that signal succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from detector.registry.store import ModelRegistry, ModelVersion, RegistryError
from detector.service.config import DetectorSettings, Shard
from detector.service.cycle_health import CycleHealth
from detector.service.scheduler import FitScheduler
from detector.service.series_state import SignalTracker
from detector.service.source import SeriesBatch, Source, SourceError
from detector.service.training import SignalModel, registry_name

__all__ = ["ModelKeeper"]

_log = logging.getLogger(__name__)


class ModelKeeper:
    """Installs, watches and schedules the models of the service's trackers."""

    def __init__(
        self,
        *,
        settings: DetectorSettings,
        source: Source,
        registry: ModelRegistry,
        fits: FitScheduler,
        trackers: dict[str, SignalTracker],
        cycles: CycleHealth,
        owned: Callable[[str, SeriesBatch], SeriesBatch],
    ) -> None:
        self.settings = settings
        self.shard: Shard = settings.shard_spec
        self.source = source
        self.registry = registry
        self.fits = fits
        self.trackers = trackers
        self.cycles = cycles
        self.owned = owned
        self._fingerprint: dict[str, str] = {}
        self._refused: set[str] = set()

    def load_current(self, now: float) -> None:
        """Serve each signal's current registry version, or queue a first fit."""
        self._fingerprint = dict(self.registry.fingerprint())
        for name, tracker in self.trackers.items():
            try:
                loaded = self.registry.load_current(registry_name(name, self.shard))
            except RegistryError as exc:
                _log.info("%s: no model yet (%s); fitting one", name, exc)
                self.fits.set_next(name, now)
                continue
            self.install(tracker, loaded.model, loaded.version, now)
            self.fits.set_next(name, loaded.version.created_at + self.settings.retrain_interval)

    def install(
        self, tracker: SignalTracker, model: object, version: ModelVersion, now: float
    ) -> bool:
        """Serve ``model`` for ``tracker`` after catching it up; False if it is not its model."""
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
                older = self.owned(name, self.source.fetch(tracker.signal, first, now)).frame
            except SourceError as exc:
                _log.warning("%s: catching the new model up failed: %s", name, exc)
        tracker.install(model, version.version, version.created_at, older)
        _log.info("%s: serving model %s (%d series)", name, version.version, len(model.columns))
        return True

    def watch_registry(self, now: float) -> None:
        """Install a newer version a notebook or `llmwatch train` published."""
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
            self.install(tracker, loaded.model, loaded.version, now)

    def collect_jobs(self, now: float) -> None:
        """Install what the fits finished since the last cycle published; report failed fits."""
        for result in self.fits.collect():
            tracker, version = self.trackers[result.signal], result.version
            if result.error is not None:
                self.cycles.fail("fit", result.signal, f"the last fit failed: {result.error}")
            else:
                self.cycles.succeed("fit", result.signal)
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
            self.install(tracker, loaded.model, loaded.version, now)

    def _young_delay(self, tracker: SignalTracker, now: float) -> float:
        # Like the backtest: while history is short, refit whenever it has about doubled.
        firsts = [s.first_seen for s in tracker.series.values()]
        age = now - min(firsts) if firsts else 0.0
        return min(self.settings.retrain_interval, max(10 * self.settings.interval, age))

    def schedule_fits(self, now: float) -> None:
        """Queue the fits that are due."""
        # Series the model does not cover yet bring the next fit forward, as history doubles.
        earliest = {
            name: (t.created_at or now) + self._young_delay(t, now)
            for name, t in self.trackers.items()
            if t.model is not None and t.untrained()
        }
        self.fits.submit_due(now, earliest)
