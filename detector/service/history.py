"""Anomaly history: one row per event (open, updated while it lasts, closed) in SQLite.

An event belongs to one series, named by its signal and labels. At most one event per series is
open at a time, enforced by the database itself: opening an event for a series that already has an
open one returns that one, so a service restarted in the middle of an anomaly resumes the event
instead of starting a second. The database runs in WAL mode, so the REST API reads while the
service writes; writes go through one connection behind a lock, each read opens its own (the
reading is :class:`~detector.service.history_reader.EventReader`'s; its names are importable from
here).

Times are unix seconds. Non-finite values (NaN samples) are stored as NULL.

Examples
--------
>>> import tempfile
>>> store = EventStore(Path(tempfile.mkdtemp()) / "history.sqlite")
>>> ev = store.open_event(signal="rps", labels={"model": "m"}, point=ScoredPoint(100.0, score=0.97))
>>> ev = store.update_event(ev.id, ScoredPoint(130.0, score=0.99), families=["seasonal"])
>>> closed = store.close_event(ev.id, at=160.0)
>>> closed.peak.score, closed.start, closed.end, store.query(signal="rps").total
(0.99, 100.0, 160.0, 1)
>>> store.close()
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from detector.core.point import ScoredPoint
from detector.service.history_reader import Event, EventError, EventPage, EventReader

__all__ = ["Event", "EventError", "EventPage", "EventStore", "check_history"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signal TEXT NOT NULL,
    labels TEXT NOT NULL,          -- canonical JSON: sorted keys
    start REAL NOT NULL,
    end REAL,                      -- NULL while open
    updated REAL NOT NULL,
    score REAL NOT NULL,           -- latest
    actual REAL, expected REAL, lower REAL, upper REAL,
    peak_score REAL NOT NULL,
    peak_at REAL NOT NULL,
    peak_actual REAL, peak_expected REAL, peak_lower REAL, peak_upper REAL,
    detectors TEXT NOT NULL,       -- JSON list: every family that fired during the event
    contributions TEXT NOT NULL,   -- JSON object, as of the peak (see update_event)
    model_version TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_one_open ON events(signal, labels) WHERE end IS NULL;
CREATE INDEX IF NOT EXISTS events_start ON events(start);
CREATE INDEX IF NOT EXISTS events_signal_start ON events(signal, start);
"""


def check_history(path: Path | str, *, reset: bool = False) -> Path | None:
    """Make sure the history at ``path`` can be opened; where it cannot, say how to recover.

    A database that SQLite cannot read raises ``ValueError`` naming the file, what is wrong and
    the two ways on: move it aside, or start with ``--reset-history``. With ``reset``, it is
    moved aside (to ``<name>.unreadable-<unix time>``, nothing is deleted) and that path is
    returned; None when the history is fine or does not exist yet.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
        if verdict != "ok":
            raise sqlite3.DatabaseError(verdict)
    except sqlite3.DatabaseError as exc:
        if not reset:
            raise ValueError(
                f"the event history {path} is unreadable ({exc}); move it aside, or start with "
                "--reset-history to move it aside and begin a new one"
            ) from None
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        path.replace(aside)
        for suffix in ("-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                extra.replace(aside.with_name(aside.name + suffix))
        return aside
    return None


def _labels_key(labels: Mapping[str, str]) -> str:
    return json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True)


class EventStore(EventReader):
    """Anomaly events in the SQLite file at ``path`` (created with its folder if missing).

    Safe for one writing thread and any number of reading threads; ``close()`` when done.
    Writes inside :meth:`batch` are one transaction: all of them are kept, or none.
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0  # batches open on the writing thread
        self._db = self._connect()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the writer connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def batch(self) -> Iterator[EventStore]:
        """Writes that are durable together or not at all (committed at the end, else undone)."""
        with self._lock:
            self._depth += 1
            try:
                with self._db:
                    yield self
            finally:
                self._depth -= 1

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            if self._depth:  # inside a batch: it commits
                yield
            else:
                with self._db:
                    yield

    def prune(self, *, ended_before: float) -> int:
        """Delete the events that ended before ``ended_before``; returns how many."""
        with self._writing():
            cur = self._db.execute(
                "DELETE FROM events WHERE end IS NOT NULL AND end < ?",
                (self._finite("ended_before", ended_before),),
            )
            return cur.rowcount

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_event(
        self,
        *,
        signal: str,
        labels: Mapping[str, str],
        point: ScoredPoint,
        families: Iterable[str] = (),
        contributions: Mapping[str, float] | None = None,
        model_version: str | None = None,
    ) -> Event:
        """Start an event for a series at ``point``, or resume the one already open for it.

        Resuming applies the given values as an update, so calling this again after a restart
        is harmless.
        """
        rest = dict(families=families, contributions=contributions, model_version=model_version)
        key = _labels_key(labels)
        with self._writing():
            row = self._db.execute(
                "SELECT id FROM events WHERE signal = ? AND labels = ? AND end IS NULL",
                (signal, key),
            ).fetchone()
            if row is not None:
                return self._update(row["id"], point, **rest)
            # A new event starts with no peak yet (-inf), then takes its first point the way
            # every later point is taken.
            t, s = self._finite("at", point.at), self._finite("score", point.score)
            cur = self._db.execute(
                "INSERT INTO events (signal, labels, start, updated, score, peak_score, peak_at,"
                " detectors, contributions) VALUES (?, ?, ?, ?, ?, ?, ?, '[]', '{}')",
                (str(signal), key, t, t, s, -math.inf, t),
            )
            return self._update(cur.lastrowid, point, **rest)

    def update_event(
        self,
        event_id: int,
        point: ScoredPoint,
        *,
        families: Iterable[str] = (),
        contributions: Mapping[str, float] | None = None,
        model_version: str | None = None,
    ) -> Event:
        """Record the latest point of an open event; a new peak replaces the peak values.

        ``families`` are added to those already recorded. ``contributions`` are kept from the
        peak point; a point without any (the isolation forest did not fire there) keeps those
        recorded, and the first point with some records them even when it is not a peak.
        """
        with self._writing():
            return self._update(
                event_id,
                point,
                families=families,
                contributions=contributions,
                model_version=model_version,
            )

    def close_event(self, event_id: int, *, at: float) -> Event:
        """Close an open event at ``at`` (no earlier than its start)."""
        t = self._finite("at", at)
        with self._writing():
            event = self._get_open(event_id)
            self._db.execute(
                "UPDATE events SET end = ?, updated = ? WHERE id = ?",
                (max(t, event.start), max(t, event.last.at), event_id),
            )
            return self._get(event_id, self._db)

    def _update(
        self,
        event_id: int,
        point: ScoredPoint,
        *,
        families: Iterable[str],
        contributions: Mapping[str, float] | None,
        model_version: str | None,
    ) -> Event:
        event = self._get_open(event_id)
        t, s = self._finite("at", point.at), self._finite("score", point.score)
        vals = [self._value(n, getattr(point, n)) for n in ("actual", "expected", "lower", "upper")]
        families = sorted(set(event.families) | set(families))
        peak = s > event.peak.score
        contributions = self._contributions(contributions)
        self._db.execute(
            "UPDATE events SET updated = ?, score = ?, actual = ?, expected = ?, lower = ?,"
            " upper = ?, detectors = ?, model_version = coalesce(?, model_version) WHERE id = ?",
            (max(t, event.last.at), s, *vals, json.dumps(families), model_version, event_id),
        )
        if peak:
            self._db.execute(
                "UPDATE events SET peak_score = ?, peak_at = ?, peak_actual = ?, peak_expected = ?,"
                " peak_lower = ?, peak_upper = ?, contributions = ? WHERE id = ?",
                (s, t, *vals, json.dumps(contributions or event.contributions), event_id),
            )
        elif contributions and not event.contributions:
            self._db.execute(
                "UPDATE events SET contributions = ? WHERE id = ?",
                (json.dumps(contributions), event_id),
            )
        return self._get(event_id, self._db)

    def _get_open(self, event_id: int) -> Event:
        event = self._get(event_id, self._db)
        if not event.is_open:
            raise EventError(f"event {event_id} is already closed")
        return event

    def _contributions(self, values: Mapping[str, float] | None) -> dict[str, float]:
        out = {}
        for name, x in (values or {}).items():
            v = self._value(f"contributions[{name!r}]", x)
            if v is not None:
                out[str(name)] = v
        # Largest first, as the API shows them.
        return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))
