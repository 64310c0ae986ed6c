"""Anomaly history: one row per event (open, updated while it lasts, closed) in SQLite.

An event belongs to one series, named by its signal and labels. At most one event per series is
open at a time, enforced by the database itself: opening an event for a series that already has an
open one returns that one, so a service restarted in the middle of an anomaly resumes the event
instead of starting a second. The database runs in WAL mode, so the REST API reads while the
service writes; writes go through one connection behind a lock, each read opens its own.

Times are unix seconds. Non-finite values (NaN samples) are stored as NULL.

Examples
--------
>>> import tempfile
>>> store = EventStore(Path(tempfile.mkdtemp()) / "history.sqlite")
>>> ev = store.open_event(signal="rps", labels={"model": "m"}, at=100.0, score=0.97)
>>> ev = store.update_event(ev.id, at=130.0, score=0.99, detectors=["seasonal"])
>>> closed = store.close_event(ev.id, at=160.0)
>>> closed.peak_score, closed.start, closed.end, store.query(signal="rps").total
(0.99, 100.0, 160.0, 1)
>>> store.close()
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Event", "EventError", "EventPage", "EventStore"]

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
_COLUMNS = (
    "id, signal, labels, start, end, updated, score, actual, expected, lower, upper, peak_score,"
    " peak_at, peak_actual, peak_expected, peak_lower, peak_upper, detectors, contributions,"
    " model_version"
)


class EventError(ValueError):
    """An event cannot be changed as asked (unknown id, already closed, bad value)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """One anomaly event of one series; ``end`` is None while it is open."""

    id: int
    signal: str
    labels: dict[str, str]
    start: float
    end: float | None
    updated: float  # time of the last update
    score: float
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    peak_score: float
    peak_at: float
    peak_actual: float | None
    peak_expected: float | None
    peak_lower: float | None
    peak_upper: float | None
    detectors: list[str] = field(default_factory=list)
    contributions: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether the event has not been closed yet."""
        return self.end is None


@dataclass(frozen=True)
class EventPage:
    """One page of a query: events newest first, and how many match in all."""

    items: list[Event]
    total: int
    limit: int
    offset: int

    @property
    def next_offset(self) -> int | None:
        """Offset of the next page, or None on the last one."""
        following = self.offset + len(self.items)
        return following if following < self.total and self.items else None


def _labels_key(labels: Mapping[str, str]) -> str:
    return json.dumps({str(k): str(v) for k, v in labels.items()}, sort_keys=True)


def _value(name: str, x: float | None) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise EventError(f"{name}={x!r} is not a number") from None
    return x if math.isfinite(x) else None


def _finite(name: str, x: float) -> float:
    out = _value(name, x)
    if out is None:
        raise EventError(f"{name}={x!r} must be finite" + (" unix time" if name != "score" else ""))
    return out


def _row_to_event(row: sqlite3.Row) -> Event:
    data = dict(row)
    data["labels"] = json.loads(data["labels"])
    data["detectors"] = json.loads(data["detectors"])
    data["contributions"] = json.loads(data["contributions"])
    return Event(**data)


class EventStore:
    """Anomaly events in the SQLite file at ``path`` (created with its folder if missing).

    Safe for one writing thread and any number of reading threads; ``close()`` when done.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._connect()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: the writer connection is shared behind ``_lock``.
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def close(self) -> None:
        """Close the writer connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def open_event(
        self,
        *,
        signal: str,
        labels: Mapping[str, str],
        at: float,
        score: float,
        actual: float | None = None,
        expected: float | None = None,
        lower: float | None = None,
        upper: float | None = None,
        detectors: Iterable[str] = (),
        contributions: Mapping[str, float] | None = None,
        model_version: str | None = None,
    ) -> Event:
        """Start an event for a series, or resume the one already open for it.

        Resuming applies the given values as an update, so calling this again after a restart
        is harmless.
        """
        point = dict(
            at=at,
            score=score,
            actual=actual,
            expected=expected,
            lower=lower,
            upper=upper,
            detectors=detectors,
            contributions=contributions,
            model_version=model_version,
        )
        key = _labels_key(labels)
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT id FROM events WHERE signal = ? AND labels = ? AND end IS NULL",
                (signal, key),
            ).fetchone()
            if row is not None:
                return self._update(row["id"], **point)
            t, s = _finite("at", at), _finite("score", score)
            vals = [_value(n, point[n]) for n in ("actual", "expected", "lower", "upper")]
            cur = self._db.execute(
                f"INSERT INTO events ({_COLUMNS.partition(', ')[2]}) "
                "VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(signal),
                    key,
                    t,
                    t,
                    s,
                    *vals,
                    s,
                    t,
                    *vals,
                    json.dumps(sorted(set(detectors))),
                    json.dumps(_contributions(contributions)),
                    model_version,
                ),
            )
            return self._get(cur.lastrowid)

    def update_event(
        self,
        event_id: int,
        *,
        at: float,
        score: float,
        actual: float | None = None,
        expected: float | None = None,
        lower: float | None = None,
        upper: float | None = None,
        detectors: Iterable[str] = (),
        contributions: Mapping[str, float] | None = None,
        model_version: str | None = None,
    ) -> Event:
        """Record the latest point of an open event; a new peak replaces the peak values.

        ``detectors`` are added to those already recorded. ``contributions`` are kept from the
        peak point; a point without any (the isolation forest did not fire there) keeps those
        recorded, and the first point with some records them even when it is not a peak.
        """
        with self._lock, self._db:
            return self._update(
                event_id,
                at=at,
                score=score,
                actual=actual,
                expected=expected,
                lower=lower,
                upper=upper,
                detectors=detectors,
                contributions=contributions,
                model_version=model_version,
            )

    def close_event(self, event_id: int, *, at: float) -> Event:
        """Close an open event at ``at`` (no earlier than its start)."""
        t = _finite("at", at)
        with self._lock, self._db:
            event = self._get_open(event_id)
            self._db.execute(
                "UPDATE events SET end = ?, updated = ? WHERE id = ?",
                (max(t, event.start), max(t, event.updated), event_id),
            )
            return self._get(event_id)

    def _update(self, event_id: int, *, at: float, score: float, **point: Any) -> Event:
        event = self._get_open(event_id)
        t, s = _finite("at", at), _finite("score", score)
        vals = [_value(n, point[n]) for n in ("actual", "expected", "lower", "upper")]
        detectors = sorted(set(event.detectors) | set(point["detectors"]))
        peak = s > event.peak_score
        contributions = _contributions(point["contributions"])
        self._db.execute(
            "UPDATE events SET updated = ?, score = ?, actual = ?, expected = ?, lower = ?,"
            " upper = ?, detectors = ?, model_version = coalesce(?, model_version) WHERE id = ?",
            (
                max(t, event.updated),
                s,
                *vals,
                json.dumps(detectors),
                point["model_version"],
                event_id,
            ),
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
        return self._get(event_id)

    def _get_open(self, event_id: int) -> Event:
        event = self._get(event_id)
        if not event.is_open:
            raise EventError(f"event {event_id} is already closed")
        return event

    def _get(self, event_id: int | None, db: sqlite3.Connection | None = None) -> Event:
        row = (
            (db or self._db)
            .execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,))
            .fetchone()
        )
        if row is None:
            raise EventError(f"no event with id {event_id}")
        return _row_to_event(row)

    # -- reading ------------------------------------------------------------------------------
    # Each read opens a short-lived connection: WAL readers never wait for the writer, and no
    # connection is shared between the API's worker threads.
    _reader = _connect

    def get(self, event_id: int) -> Event:
        """One event by id; :class:`EventError` if there is none."""
        db = self._reader()
        try:
            return self._get(event_id, db)
        finally:
            db.close()

    def open_events(self) -> list[Event]:
        """Events not yet closed, oldest first: what a restarted service resumes."""
        db = self._reader()
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE end IS NULL ORDER BY start, id"
            ).fetchall()
        finally:
            db.close()
        return [_row_to_event(r) for r in rows]

    def query(
        self,
        *,
        start: float | None = None,
        end: float | None = None,
        signal: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventPage:
        """Events that overlap ``[start, end]`` (open ones last until now), newest first.

        Raises :class:`EventError` if ``start > end`` or ``limit``/``offset`` are out of range.
        """
        if start is not None and end is not None and start > end:
            raise EventError(f"start={start} is after end={end}")
        if not 1 <= limit <= 10_000:
            raise EventError(f"limit={limit} is out of range; allowed [1, 10000]")
        if not 0 <= offset <= 2**62:
            raise EventError(f"offset={offset} is out of range; allowed [0, 2**62]")
        where, args = [], []
        if start is not None:
            where.append("(end IS NULL OR end >= ?)")
            args.append(_finite("start", start))
        if end is not None:
            where.append("start <= ?")
            args.append(_finite("end", end))
        if signal is not None:
            where.append("signal = ?")
            args.append(signal)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        db = self._reader()
        try:
            # One read transaction, so the total and the page agree with each other.
            db.execute("BEGIN")
            total = db.execute(f"SELECT count(*) FROM events {clause}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM events {clause} ORDER BY start DESC, id DESC"
                " LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
        return EventPage([_row_to_event(r) for r in rows], total, limit, offset)


def _contributions(values: Mapping[str, float] | None) -> dict[str, float]:
    out = {}
    for name, x in (values or {}).items():
        v = _value(f"contributions[{name!r}]", x)
        if v is not None:
            out[str(name)] = v
    # Largest first, as the API shows them.
    return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))
