"""Reading the anomaly history: one event by id, the open ones, and pages of a time range.

:class:`EventReader` is the read side of :class:`detector.service.history.EventStore`, which adds
the writing; the REST API and the service read through the store. Each read opens a short-lived
connection: in WAL mode readers never wait for the writer, and no connection is shared between
the API's worker threads. Times are unix seconds; values stored as NULL read back as None.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from detector.core.point import ScoredPoint

__all__ = ["Event", "EventError", "EventPage", "EventReader"]


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
    last: ScoredPoint  # the latest point recorded; ``last.at`` is when it was last updated
    peak: ScoredPoint  # the point of the highest score so far
    families: list[str] = field(default_factory=list)  # every family that fired
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


def _point(row: sqlite3.Row, prefix: str, at: str, score: str) -> ScoredPoint:
    values = [row[prefix + n] for n in ("actual", "expected", "lower", "upper")]
    return ScoredPoint(row[at], *values, score=row[score])


def _row_to_event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        signal=row["signal"],
        labels=json.loads(row["labels"]),
        start=row["start"],
        end=row["end"],
        last=_point(row, "", "updated", "score"),
        peak=_point(row, "peak_", "peak_at", "peak_score"),
        families=json.loads(row["detectors"]),
        contributions=json.loads(row["contributions"]),
        model_version=row["model_version"],
    )


class EventReader:
    """Read access to the events in the SQLite history file at ``path``; safe from any thread.

    The file and its table are made by :class:`detector.service.history.EventStore`.
    """

    # The columns :func:`_row_to_event` reads.
    _COLUMNS = (
        "id, signal, labels, start, end, updated, score, actual, expected, lower, upper,"
        " peak_score, peak_at, peak_actual, peak_expected, peak_lower, peak_upper, detectors,"
        " contributions, model_version"
    )

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: the store's writer connection is shared behind its lock.
        db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @staticmethod
    def _value(name: str, x: float | None) -> float | None:
        """``x`` as a float, None where it is missing or not finite; EventError naming ``name``."""
        if x is None:
            return None
        try:
            x = float(x)
        except (TypeError, ValueError):
            raise EventError(f"{name}={x!r} is not a number") from None
        return x if math.isfinite(x) else None

    @classmethod
    def _finite(cls, name: str, x: float) -> float:
        """``x`` as a finite float; EventError naming ``name`` otherwise."""
        out = cls._value(name, x)
        if out is None:
            raise EventError(
                f"{name}={x!r} must be finite" + (" unix time" if name != "score" else "")
            )
        return out

    def _get(self, event_id: int | None, db: sqlite3.Connection) -> Event:
        row = db.execute(f"SELECT {self._COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise EventError(f"no event with id {event_id}")
        return _row_to_event(row)

    def get(self, event_id: int) -> Event:
        """One event by id; :class:`EventError` if there is none."""
        with closing(self._connect()) as db:
            return self._get(event_id, db)

    def open_events(self) -> list[Event]:
        """Events not yet closed, oldest first: what a restarted service resumes."""
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT {self._COLUMNS} FROM events WHERE end IS NULL ORDER BY start, id"
            ).fetchall()
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
            args.append(self._finite("start", start))
        if end is not None:
            where.append("start <= ?")
            args.append(self._finite("end", end))
        if signal is not None:
            where.append("signal = ?")
            args.append(signal)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with closing(self._connect()) as db:
            # One read transaction, so the total and the page agree with each other.
            db.execute("BEGIN")
            total = db.execute(f"SELECT count(*) FROM events {clause}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT {self._COLUMNS} FROM events {clause} ORDER BY start DESC, id DESC"
                " LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            db.execute("COMMIT")
        return EventPage([_row_to_event(r) for r in rows], total, limit, offset)
