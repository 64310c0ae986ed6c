"""Recording a signal's anomaly events from its scored rows, durably or not at all.

The tracker scores rows and hands them here; :class:`EventLog` turns the runs of ``anomalous``
rows into events (open at a run's start, updated at its peak and end, closed when it ends) and
writes each batch of rows in one transaction of the :class:`~detector.service.history.EventStore`. A
batch counts as recorded only once that transaction is committed. When a write fails (disk
full, database locked or read-only), the batch is undone, the series' open events are put back
as they were, and the rows stay queued: the next cycle writes them first, so no event is lost,
while the queue is bounded so that a history that never recovers cannot exhaust memory.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from detector.core.attribution import BatchAttribution
from detector.core.point import ScoredPoint

if TYPE_CHECKING:
    from detector.service.history import Event, EventStore

__all__ = ["EventLog", "RecordError", "ScoredRows"]

_log = logging.getLogger(__name__)

# Rows x series kept while the history refuses writes (about 8 MB per million cells and array);
# beyond it the oldest rows are dropped, and said so.
_MAX_PENDING_CELLS = 2_000_000


class RecordError(RuntimeError):
    """Events could not be written; the rows wait for the next cycle."""


class _Series(Protocol):
    labels: dict[str, str]
    event: Event | None


@dataclass
class ScoredRows:
    """One scored batch of a signal as arrays: rows are times, columns the model's series."""

    columns: list[str]
    t: np.ndarray
    actual: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray
    families: dict[str, np.ndarray]
    version: str | None
    attribution: BatchAttribution | None = None
    # Load-aware expectations: the factor the load put on each cell, and per column the load
    # signals its expectation follows (columns without any follow the time of day).
    load_factor: np.ndarray | None = None
    explained: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def point(self, r: int, j: int) -> ScoredPoint:
        """Row ``r`` of column ``j`` as the record every later layer carries."""
        return ScoredPoint.of(
            self.t[r],
            self.actual[r, j],
            self.expected[r, j],
            self.lower[r, j],
            self.upper[r, j],
            self.score[r, j],
        )

    @property
    def cells(self) -> int:
        """Rows times series."""
        return self.t.size * len(self.columns)


class EventLog:
    """The events of one signal's series, written batch by batch.

    Parameters
    ----------
    signal : str
        The signal's name, recorded with each event.
    enter : float
        The alarm level: a family at or above it on a row "fired" there.
    """

    def __init__(self, signal: str, *, enter: float) -> None:
        self.signal = signal
        self.enter = enter
        self.pending: deque[ScoredRows] = deque()
        # Rows up to here had their events recorded already (by a previous run): after a
        # restart the model replays them to rebuild its state, but records nothing twice.
        self.recorded_until = -math.inf
        self.error: str | None = None  # why the last write failed, until one succeeds

    def add(self, rows: ScoredRows) -> None:
        """Queue a scored batch; the oldest are dropped beyond the memory bound."""
        self.pending.append(rows)
        while sum(r.cells for r in self.pending) > _MAX_PENDING_CELLS and len(self.pending) > 1:
            lost = self.pending.popleft()
            _log.error(
                "%s: the history has refused writes for too long; the events of %d rows up to "
                "%s are lost",
                self.signal,
                lost.t.size,
                lost.t[-1],
            )
            self.recorded_until = max(self.recorded_until, float(lost.t[-1]))

    def flush(self, store: EventStore | None, series: Mapping[str, _Series]) -> None:
        """Write the queued batches in order; raises :class:`RecordError` if one cannot be."""
        if store is None:
            self.pending.clear()
            return
        while self.pending:
            rows = self.pending[0]
            saved = {key: state.event for key, state in series.items()}
            try:
                with store.batch():
                    self._write(store, rows, series)
            except Exception as exc:  # undone as a whole: disk full, locked, read-only, corrupt
                for key, event in saved.items():
                    series[key].event = event
                waiting = sum(r.t.size for r in self.pending)
                self.error = f"{type(exc).__name__}: {exc}"
                raise RecordError(
                    f"{self.signal}: writing events fails ({self.error}); {waiting} scored rows "
                    "wait to be recorded"
                ) from exc
            self.pending.popleft()
            self.recorded_until = max(self.recorded_until, float(rows.t[-1]))
        self.error = None

    def _write(self, store: EventStore, rows: ScoredRows, series: Mapping[str, _Series]) -> None:
        k0 = int(np.searchsorted(rows.t, self.recorded_until, side="right"))
        if k0 == rows.t.size:
            return
        for j, key in enumerate(rows.columns):
            state = series.get(key)
            if state is None:
                continue
            if state.event is not None or rows.anomalous[k0:, j].any():
                self._events(store, state, rows, j, k0)

    def _events(self, store: EventStore, state: _Series, rows: ScoredRows, j: int, k0: int) -> None:
        on = rows.anomalous[k0:, j].astype(bool)
        # Runs of consecutive anomalous rows: [starts[k], stops[k]).
        edges = np.diff(np.r_[0, on.astype(np.int8), 0])
        starts, stops = np.flatnonzero(edges == 1) + k0, np.flatnonzero(edges == -1) + k0
        if state.event is not None and (starts.size == 0 or starts[0] > k0):
            store.close_event(state.event.id, at=float(rows.t[k0]))
            state.event = None
        explained = rows.attribution.family if rows.attribution is not None else None
        forest = rows.families.get(explained) if explained is not None else None
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            marks = {a, a + int(np.argmax(rows.score[a:b, j])), b - 1}
            if forest is not None:
                # The joint family's own peak too, so that its explanation is recorded where it
                # is clearest (the series' score does not include the joint family's).
                top = a + int(np.argmax(forest[a:b, j]))
                if forest[top, j] >= self.enter:
                    marks.add(top)
            for r in sorted(marks):
                point, rest = rows.point(r, j), self._context(rows, r, j)
                if state.event is None:
                    state.event = store.open_event(
                        signal=self.signal, labels=state.labels, point=point, **rest
                    )
                else:
                    state.event = store.update_event(state.event.id, point, **rest)
            if b < rows.t.size:
                store.close_event(state.event.id, at=float(rows.t[b]))
                state.event = None

    def _context(self, rows: ScoredRows, r: int, j: int) -> dict[str, Any]:
        """What an event records with a point: the families that fired and why, the model."""
        fired = [f for f, a in rows.families.items() if a[r, j] >= self.enter]
        explain = rows.attribution is not None and rows.attribution.family in fired
        factor = rows.load_factor[r, j] if rows.load_factor is not None else None
        return {
            "families": fired,
            "contributions": rows.attribution.at(r) if explain else None,
            "model_version": rows.version,
            "explained_by": rows.explained.get(rows.columns[j], ()),
            "load_factor": factor,
        }
