"""One signal's live state in the service: its series, its model, recent values and open events.

:class:`SignalTracker` is plain single-threaded logic (no I/O but the event store it is handed):
the service feeds it each cycle's new rows, installs models, and reads statuses from it. Rows
are scored with the signal's ensemble in one array call for all series; events open, update and
close where the hysteresis decision changes, so a catch-up of many rows after an outage records
the same events a live run would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from detector.core.point import ScoredPoint
from detector.core.timeutil import seconds
from detector.service.config import SignalSettings
from detector.service.event_log import EventLog, ScoredRows
from detector.service.source import SeriesBatch, series_key
from detector.service.training import SignalModel, denominator_trials, load_covariates
from detector.service.views import ActiveAnomaly, SeriesStatus

if TYPE_CHECKING:
    from detector.service.history import Event, EventStore

__all__ = ["SignalTracker"]

_log = logging.getLogger(__name__)


@dataclass
class _Series:
    labels: dict[str, str]
    first_seen: float
    last_seen: float = math.nan  # time of the last finite value
    point: ScoredPoint = field(default_factory=ScoredPoint)
    family_scores: dict[str, float] = field(default_factory=dict)
    anomalous: bool = False
    event: Event | None = None
    load_factor: float | None = None  # what the load of the last point did to its expectation


class SignalTracker:
    """Series, model, recent values and open events of one signal.

    Parameters
    ----------
    signal : SignalSettings
        The signal's configuration.
    stale_after : float
        Seconds without a value after which a series is dropped (its event closed).
    buffer_span : float
        Seconds of recent rows kept, so that a model fitted elsewhere can catch up on them.
    max_series : int
        Series tracked at most; new ones beyond it are refused (counted in ``refused``).
    """

    def __init__(
        self,
        signal: SignalSettings,
        *,
        stale_after: float,
        buffer_span: float,
        max_series: int = 10_000,
    ) -> None:
        self.signal = signal
        self.stale_after = stale_after
        self.buffer_span = buffer_span
        self.max_series = max_series
        self.refused = 0  # series seen in the last pull but not tracked: over ``max_series``
        self.invalid_points = 0  # infinite values taken as missing, since the start
        self.model: SignalModel | None = None
        self.version: str | None = None
        self.created_at: float | None = None
        self.last_ts: float | None = None  # end of the last range pulled successfully
        self.failing = False
        self.series: dict[str, _Series] = {}
        # The served model's load-aware series (asked of each model once, not per series).
        self._explained: tuple[SignalModel | None, dict[str, tuple[str, ...]]] = (None, {})
        self.buffer = pd.DataFrame(index=pd.DatetimeIndex([], name="timestamp"))
        self._resumed: dict[str, Event] = {}
        self.log = EventLog(signal.name, enter=signal.thresholds.enter)

    # -- events carried over a restart ----------------------------------------------------------
    def resume(self, events: list[Event], recorded_until: float) -> None:
        """Events left open by a previous run, and the time its recording reached.

        An open event continues while the replayed decision stays anomalous past
        ``recorded_until``, and closes at the first row after it that is not.
        """
        for event in events:
            self._resumed[series_key(event.labels)] = event
        self.log.recorded_until = recorded_until

    # -- models -------------------------------------------------------------------------------
    def install(
        self,
        model: SignalModel,
        version: str | None,
        created_at: float | None,
        older: pd.DataFrame | None = None,
    ) -> None:
        """Serve ``model`` from now on; it first catches up on the rows it has not seen.

        Those are the buffered rows, plus ``older`` ones fetched by the caller when the model's
        streaming state ends before the buffer begins (see :meth:`catch_up_start`).
        """
        seen = model.seen_until if math.isfinite(model.seen_until) else model.training_end
        model.seen_until = seen
        rows = self.buffer
        if older is not None and older.shape[0]:
            rows = pd.concat([older[older.index < rows.index[0]] if rows.shape[0] else older, rows])
        if rows.shape[0]:
            newer = rows[seconds(rows.index) > seen]
            if newer.shape[0]:
                model.ensemble.update(newer.reindex(columns=model.columns))
                model.seen_until = float(seconds(newer.index)[-1])
        if self.model is not None:
            model.ensemble.carry_decisions(self.model.ensemble)
        self.model, self.version, self.created_at = model, version, created_at

    def catch_up_start(self, model: SignalModel) -> float | None:
        """Where ``model``'s streaming state ends, if the buffer does not reach back to it.

        None when the buffer covers it, or is empty (the next pull then starts there).
        """
        if not self.buffer.shape[0]:
            return None
        seen = model.seen_until if math.isfinite(model.seen_until) else model.training_end
        first = float(seconds(self.buffer.index)[0])
        return seen if seen < first - self.signal.step else None

    # -- each cycle ---------------------------------------------------------------------------
    def ingest(
        self,
        batch: SeriesBatch,
        end: float,
        store: EventStore | None,
        rates: pd.DataFrame | None = None,
        loads: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        """Take rows pulled up to ``end``: remember, score, record events, drop silent series.

        ``rates`` are the recent rows of the signal's denominator (a request rate), for a ratio;
        ``loads`` those of the load signals its expectation follows.
        """
        frame = self._admitted(batch.frame)
        self.failing = False
        t = seconds(frame.index) if frame.shape[0] else np.zeros(0)
        # First and last finite row of every column at once: a loop over columns with pandas
        # indexing costs more than scoring when a thousand series get one row each.
        finite = np.isfinite(frame.to_numpy(dtype=np.float64)) if frame.shape[0] else None
        if finite is not None:
            has = finite.any(axis=0)
            first = np.argmax(finite, axis=0)
            last = finite.shape[0] - 1 - np.argmax(finite[::-1], axis=0)
            for j, key in enumerate(frame.columns):
                if not has[j]:
                    continue
                state = self.series.get(key)
                if state is None:
                    state = self.series[key] = _Series(
                        labels=batch.labels[key], first_seen=float(t[first[j]])
                    )
                    if key in self._resumed:
                        state.event = self._resumed.pop(key)
                state.last_seen = float(t[last[j]])
        if frame.shape[0]:
            self._remember(frame)
            if self.model is not None and frame.index[-1] > pd.Timestamp(
                self.model.seen_until, unit="s"
            ):
                fresh = frame[t > self.model.seen_until]
                self._score(fresh, rates, load_covariates(fresh, loads or {}))
            self._unmodelled(frame)
        self.last_ts = end
        # Events are written once scoring is done: a failed write leaves the rows queued
        # (raising RecordError), and the next cycle writes them before anything newer.
        self.log.flush(store, self.series)
        self._drop_silent(end, store)

    def _admitted(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The series this tracker may keep (``max_series``), with infinite values blanked."""
        new = [k for k in frame.columns if k not in self.series]
        room = max(self.max_series - len(self.series), 0)
        refused = new[room:]
        if refused and not self.refused:
            _log.warning(
                "%s: %d series over the cap of %d (max_series) are not tracked, e.g. %s",
                self.signal.name,
                len(refused),
                self.max_series,
                refused[0],
            )
        self.refused = len(refused)
        if refused:
            frame = frame.drop(columns=refused)
        values = frame.to_numpy(dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            # A value beyond float range (or Prometheus' +Inf) is no measurement: missing.
            self.invalid_points += int(infinite.sum())
            frame = frame.mask(infinite)
        return frame

    def _remember(self, frame: pd.DataFrame) -> None:
        buffer = pd.concat([self.buffer, frame]) if self.buffer.shape[0] else frame.copy()
        buffer = buffer[~buffer.index.duplicated(keep="last")].sort_index()
        cut = buffer.index[-1] - pd.Timedelta(seconds=self.buffer_span)
        self.buffer = buffer[buffer.index > cut]

    def _score(
        self, frame: pd.DataFrame, rates: pd.DataFrame | None, loads: pd.DataFrame | None
    ) -> None:
        model = self.model
        if model is None:
            return
        x = frame.reindex(columns=model.columns)
        res = model.ensemble.update(x, denominator_trials(x, rates, self.signal.step), loads)
        model.seen_until = float(seconds(frame.index)[-1])
        # The ensemble's outputs come in its own column order, which is the model's.
        rows = ScoredRows(
            columns=list(model.columns),
            t=seconds(frame.index),
            actual=x.to_numpy(),
            expected=res.expected.to_numpy(),
            lower=res.lower.to_numpy(),
            upper=res.upper.to_numpy(),
            score=res.signal_scores.to_numpy(),
            anomalous=res.signal_anomalous.to_numpy(),
            families=res.by_family(),
            version=self.version,
            attribution=res.attribution,
            load_factor=None if res.load_factor is None else res.load_factor.to_numpy(),
            explained=self._explained_signals(model),
        )
        finite = np.isfinite(rows.actual)
        has = finite.any(axis=0)
        last = rows.t.size - 1 - np.argmax(finite[::-1], axis=0)
        for j, key in enumerate(model.columns):
            state = self.series.get(key)
            if state is None:
                continue
            if has[j]:
                r = int(last[j])
                state.point = rows.point(r, j)
                state.family_scores = {f: float(a[r, j]) for f, a in rows.families.items()}
                if res.load_factor is not None:
                    state.load_factor = float(res.load_factor.iat[r, j])
            state.anomalous = bool(rows.anomalous[-1, j])
        self.log.add(rows)

    def _unmodelled(self, frame: pd.DataFrame) -> None:
        # Series the model does not cover yet (new, or too young to fit) still show their value.
        known = set(self.model.columns) if self.model is not None else set()
        others = [k for k in frame.columns if k not in known and k in self.series]
        if not others:
            return
        t = seconds(frame.index)
        values = frame[others].to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        last = values.shape[0] - 1 - np.argmax(finite[::-1], axis=0)
        for j, key in enumerate(others):
            if finite[:, j].any():
                self.series[key].point = ScoredPoint(float(t[last[j]]), float(values[last[j], j]))

    def _drop_silent(self, now: float, store: EventStore | None) -> None:
        for key in [k for k, s in self.series.items() if now - s.last_seen > self.stale_after]:
            state = self.series[key]
            if state.event is not None and store is not None:
                # A failed close raises: the series stays, and the next cycle closes it.
                store.close_event(state.event.id, at=state.last_seen + self.signal.step)
            del self.series[key]
            _log.info(
                "%s %s: no value for %.0f s, dropped", self.signal.name, key, now - state.last_seen
            )

    def mark_failed(self) -> None:
        """The last query failed: every series is stale until one succeeds."""
        self.failing = True

    # -- reading ------------------------------------------------------------------------------
    def statuses(self, *, min_span: float = 0.0, next_fit: float = 0.0) -> list[SeriesStatus]:
        """Latest status of every series.

        A series the model does not cover says what it waits for: ``min_span`` seconds of
        history, then the fit due at ``next_fit`` (unix seconds).
        """
        version = self.version
        covered = set(self.model.columns) if self.model is not None else set()
        return [
            SeriesStatus(
                signal=self.signal.name,
                labels=dict(s.labels),
                point=s.point,
                family_scores=dict(s.family_scores),
                anomalous=s.anomalous,
                stale=self.failing,
                model_version=version if key in covered else None,
                event_peak=None if s.event is None else max(s.event.peak.score, s.point.score),
                **self._load(key, s),
                **({} if key in covered else _waiting(s, min_span, next_fit)),
            )
            for key, s in self.series.items()
        ]

    def _load(self, key: str, s: _Series) -> dict[str, Any]:
        """The load signals the series' expectation follows, and their effect on the last one."""
        model = self.model
        if model is None:
            return {}
        explained = self._explained_signals(model)
        if key not in explained:
            return {}
        return {"explained_by": explained[key], "load_factor": s.load_factor}

    def _explained_signals(self, model: SignalModel) -> dict[str, tuple[str, ...]]:
        if self._explained[0] is not model:
            self._explained = (model, model.ensemble.explained_signals())
        return self._explained[1]

    def active(self) -> list[ActiveAnomaly]:
        """Open events of this signal's series."""
        out = []
        enter = self.signal.thresholds.enter
        for key, s in self.series.items():
            if s.event is None:
                continue
            fired = [f for f, v in s.family_scores.items() if v >= enter]
            out.append(
                ActiveAnomaly(
                    event_id=s.event.id,
                    signal=self.signal.name,
                    labels=dict(s.labels),
                    since=s.event.start,
                    peak_score=max(s.event.peak.score, s.point.score),
                    point=s.point,
                    families=sorted(set(fired) | set(s.event.families)),
                    contributions=dict(s.event.contributions),
                    **self._load(key, s),
                )
            )
        return out

    def untrained(self) -> int:
        """Series seen that the model does not cover."""
        covered = set(self.model.columns) if self.model is not None else set()
        return sum(1 for k in self.series if k not in covered)


def _waiting(series: _Series, min_span: float, next_fit: float) -> dict[str, object]:
    """Why a series has no model yet, and when one is expected."""
    have = series.last_seen - series.first_seen if math.isfinite(series.last_seen) else 0.0
    ready = series.first_seen + min_span
    if have < min_span:
        why = f"history: {_duration(have)} of {_duration(min_span)}"
    else:
        why = "the next fit: the history suffices"
    due = ready if not math.isfinite(next_fit) else max(ready, next_fit)
    return {"waiting_for": why, "ready_at": due}


def _duration(seconds: float) -> str:
    """A few seconds to days, in the unit that reads best.

    >>> _duration(200.0), _duration(7200.0), _duration(2 * 86400.0)
    ('3 min', '2 h', '2 d')
    """
    for unit, size in (("d", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
