"""Reading the anomaly history: one event by id, the open ones, and pages of a time range.

:class:`EventReader` is the read side of :class:`detector.service.history.EventStore`, which adds
the writing; the REST API and the service read through the store. Each read takes a pooled
connection of its own, so no connection is shared between the API's worker threads: on SQLite
(WAL) readers never wait for the writer; on PostgreSQL any number of replicas read the history
that all of them write. Times are unix seconds; values stored as NULL read back as None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from detector.core.point import ScoredPoint
from detector.service.history_db import EVENTS, is_sqlite

__all__ = ["Event", "EventError", "EventPage", "EventReader", "Owned", "event_from_row"]

# Whether a series (signal, labels) is this replica's: its shard's ``owns``.
Owned = Callable[[str, dict[str, str]], bool]


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
    shard: str | None = None  # the replica that records it, "i/n"; None before 0.6
    # What the expectation follows (empty: time of day only) and the load's factor on the
    # latest point, as the recording replica saw them.
    explained_by: tuple[str, ...] = ()
    load_factor: float | None = None

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


def _float(x: float | None) -> float | None:
    # SQLite's RETURNING gives a whole REAL as the integer it is stored as (a SELECT does not).
    return None if x is None else float(x)


def _point(row: Mapping[str, Any], prefix: str, at: str, score: str) -> ScoredPoint:
    values = [_float(row[prefix + n]) for n in ("actual", "expected", "lower", "upper")]
    return ScoredPoint(float(row[at]), *values, score=float(row[score]))


def event_from_row(row: Mapping[str, Any]) -> Event:
    """The event of one row of the events table (as read, or as an UPDATE returns it)."""
    return Event(
        id=row["id"],
        signal=row["signal"],
        labels=json.loads(row["labels"]),
        start=float(row["start"]),
        end=_float(row["end"]),
        last=_point(row, "", "updated", "score"),
        peak=_point(row, "peak_", "peak_at", "peak_score"),
        families=json.loads(row["detectors"]),
        contributions=json.loads(row["contributions"]),
        model_version=row["model_version"],
        shard=row["shard"],
        explained_by=tuple(json.loads(row["explained_by"] or "[]")),
        load_factor=_float(row["load_factor"]),
    )


class EventReader:
    """Read access to the events of the history behind ``engine``; safe from any thread.

    The table is made by :class:`detector.service.history.EventStore` (its migrations).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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

    @staticmethod
    def _get(event_id: int | None, db: Connection) -> Event:
        row = db.execute(sa.select(EVENTS).where(EVENTS.c.id == event_id)).mappings().first()
        if row is None:
            raise EventError(f"no event with id {event_id}")
        return event_from_row(row)

    def _reading(self) -> Connection:
        """A connection for one consistent read (a snapshot, on both databases)."""
        db = self.engine.connect()
        if not is_sqlite(db):  # SQLite's BEGIN already reads one snapshot
            db = db.execution_options(isolation_level="REPEATABLE READ")
        return db

    def get(self, event_id: int) -> Event:
        """One event by id; :class:`EventError` if there is none."""
        with self._reading() as db:
            return self._get(event_id, db)

    def open_events(
        self, owned: Callable[[str, dict[str, str]], bool] | None = None
    ) -> list[Event]:
        """Events not yet closed, oldest first: what a restarted service resumes.

        With ``owned(signal, labels)``, only the events of the series it accepts (a replica's
        own shard, on a history replicas share).
        """
        query = (
            sa.select(EVENTS).where(EVENTS.c.end.is_(None)).order_by(EVENTS.c.start, EVENTS.c.id)
        )
        with self._reading() as db:
            rows = db.execute(query).mappings().all()
        events = (event_from_row(r) for r in rows)
        return [e for e in events if owned is None or owned(e.signal, e.labels)]

    def recorded_until(self, signal: str, since: float, owned: Owned | None = None) -> float:
        """Where the recording of ``signal`` reached: the latest update or end of its events
        that overlap ``[since, now]`` (of the series ``owned`` accepts); -inf if none."""
        c = EVENTS.c
        last = sa.func.max(sa.func.coalesce(c.end, c.updated))
        query = (
            sa.select(c.labels, sa.func.max(c.updated), last)
            .where(c.signal == signal, sa.or_(c.end.is_(None), c.end >= since))
            .group_by(c.labels)
        )
        with self._reading() as db:
            rows = db.execute(query).all()
        marks = [
            max(updated, end)
            for labels, updated, end in rows
            if owned is None or owned(signal, json.loads(labels))
        ]
        return max(marks, default=-math.inf)

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
        where = list(self._overlapping(start, end, signal))
        order = (EVENTS.c.start.desc(), EVENTS.c.id.desc())
        with self._reading() as db:
            # One read transaction, so the total and the page agree with each other.
            total = db.execute(sa.select(sa.func.count()).select_from(EVENTS).where(*where))
            count = total.scalar_one()
            page = sa.select(EVENTS).where(*where).order_by(*order).limit(limit).offset(offset)
            rows = db.execute(page).mappings().all()
        return EventPage([event_from_row(r) for r in rows], count, limit, offset)

    def _overlapping(
        self, start: float | None, end: float | None, signal: str | None
    ) -> Iterable[sa.ColumnElement[bool]]:
        if start is not None:
            yield sa.or_(EVENTS.c.end.is_(None), EVENTS.c.end >= self._finite("start", start))
        if end is not None:
            yield EVENTS.c.start <= self._finite("end", end)
        if signal is not None:
            yield EVENTS.c.signal == signal
