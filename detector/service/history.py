"""Anomaly history: one row per event (open, updated while it lasts, closed).

An event belongs to one series, named by its signal and labels. At most one event per series is
open at a time, enforced by the database itself: opening an event for a series that already has an
open one returns that one, so a service restarted in the middle of an anomaly resumes the event
instead of starting a second. Writes go through one transaction at a time behind a lock; reads
take connections of their own (the reading is
:class:`~detector.service.history_reader.EventReader`'s; its names are importable from here).
Where the history lives, and its schema migrations, are :mod:`detector.service.history_db`'s:
a SQLite file by default, a PostgreSQL database that sharded replicas share (each writes its
own shard's series; all read every event).

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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from detector.core.point import ScoredPoint
from detector.service.history_db import (
    EVENTS,
    create_history_engine,
    database_url,
    migrate,
    redacted,
    sqlite_path,
)
from detector.service.history_reader import (
    Event,
    EventError,
    EventPage,
    EventReader,
    event_from_row,
)

__all__ = ["Event", "EventError", "EventPage", "EventStore", "check_history"]

_VALUES = ("actual", "expected", "lower", "upper")


def check_history(location: Path | str, *, reset: bool = False) -> Path | None:
    """Make sure the history at ``location`` can be opened; where it cannot, say how to recover.

    A SQLite file that SQLite cannot read raises ``ValueError`` naming the file, what is wrong
    and the two ways on: move it aside, or start with ``--reset-history``. With ``reset``, it is
    moved aside (to ``<name>.unreadable-<unix time>``, nothing is deleted) and that path is
    returned; None when the history is fine or does not exist yet. A database server that does
    not answer raises ``ValueError`` naming it (its password hidden): nothing is reset there.
    """
    url, path = database_url(location), sqlite_path(location)
    if path is None:
        engine = create_history_engine(url)
        try:
            with engine.connect() as db:
                db.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ValueError(
                f"the event history {redacted(url)} does not answer: {reason}"
            ) from None
        finally:
            engine.dispose()
        return None
    if not path.is_file():
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
    """Anomaly events in the history at ``location``: a SQLite file path (created with its
    folder if missing) or a database URL (``postgresql://…``), upgraded to the newest schema.

    ``shard`` ("i/n") is recorded with each event this store opens. Safe for one writing thread
    and any number of reading threads; ``close()`` when done. Writes inside :meth:`batch` are
    one transaction: all of them are kept, or none.
    """

    def __init__(self, location: Path | str, *, shard: str | None = None) -> None:
        super().__init__(create_history_engine(location))
        self.url = redacted(database_url(location))
        self.path = sqlite_path(location)  # None on a database server
        self.revision = migrate(self.engine)
        self.shard = shard
        self._lock = threading.RLock()
        self._db: Connection | None = None  # the open transaction's

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            self.engine.dispose()

    @contextmanager
    def batch(self) -> Iterator[EventStore]:
        """Writes that are durable together or not at all (committed at the end, else undone)."""
        with self._writing():
            yield self

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._lock:
            if self._db is not None:  # inside a batch: it commits
                yield self._db
                return
            with self.engine.begin() as db:
                self._db = db
                try:
                    yield db
                finally:
                    self._db = None

    def prune(self, *, ended_before: float) -> int:
        """Delete the events that ended before ``ended_before``; returns how many."""
        cutoff = self._finite("ended_before", ended_before)
        with self._writing() as db:
            done = db.execute(
                sa.delete(EVENTS).where(EVENTS.c.end.is_not(None), EVENTS.c.end < cutoff)
            )
            return done.rowcount

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
        explained_by: Iterable[str] | None = None,
        load_factor: float | None = None,
    ) -> Event:
        """Start an event for a series at ``point``, or resume the one already open for it.

        Resuming applies the given values as an update, so calling this again after a restart
        is harmless.
        """
        rest = dict(
            families=families,
            contributions=contributions,
            model_version=model_version,
            explained_by=explained_by,
            load_factor=load_factor,
        )
        key = _labels_key(labels)
        c = EVENTS.c
        with self._writing() as db:
            found = (
                db.execute(
                    sa.select(EVENTS).where(c.signal == signal, c.labels == key, c.end.is_(None))
                )
                .mappings()
                .first()
            )
            if found is not None:
                return self._update(db, event_from_row(found), point, **rest)
            # A new event starts with no peak yet (-inf), then takes its first point the way
            # every later point is taken.
            t, s = self._finite("at", point.at), self._finite("score", point.score)
            new = (
                db.execute(
                    sa.insert(EVENTS)
                    .values(
                        signal=str(signal),
                        labels=key,
                        start=t,
                        updated=t,
                        score=s,
                        peak_score=-math.inf,
                        peak_at=t,
                        detectors="[]",
                        contributions="{}",
                        shard=self.shard,
                    )
                    .returning(*c)
                )
                .mappings()
                .one()
            )
            return self._update(db, event_from_row(new), point, **rest)

    def update_event(
        self,
        event_id: int,
        point: ScoredPoint,
        *,
        families: Iterable[str] = (),
        contributions: Mapping[str, float] | None = None,
        model_version: str | None = None,
        explained_by: Iterable[str] | None = None,
        load_factor: float | None = None,
    ) -> Event:
        """Record the latest point of an open event; a new peak replaces the peak values.

        ``families`` are added to those already recorded. ``contributions`` are kept from the
        peak point; a point without any (the isolation forest did not fire there) keeps those
        recorded, and the first point with some records them even when it is not a peak.
        ``load_factor`` is the latest point's, and so is ``explained_by`` where given.
        """
        with self._writing() as db:
            return self._update(
                db,
                self._get_open(event_id, db),
                point,
                families=families,
                contributions=contributions,
                model_version=model_version,
                explained_by=explained_by,
                load_factor=load_factor,
            )

    def close_event(self, event_id: int, *, at: float) -> Event:
        """Close an open event at ``at`` (no earlier than its start)."""
        t = self._finite("at", at)
        with self._writing() as db:
            event = self._get_open(event_id, db)
            return self._set(db, event_id, end=max(t, event.start), updated=max(t, event.last.at))

    def _update(
        self,
        db: Connection,
        event: Event,
        point: ScoredPoint,
        *,
        families: Iterable[str],
        contributions: Mapping[str, float] | None,
        model_version: str | None,
        explained_by: Iterable[str] | None,
        load_factor: float | None,
    ) -> Event:
        t, s = self._finite("at", point.at), self._finite("score", point.score)
        vals = {n: self._value(n, getattr(point, n)) for n in _VALUES}
        contributions = self._contributions(contributions)
        latest = dict(
            updated=max(t, event.last.at),
            score=s,
            **vals,
            detectors=json.dumps(sorted(set(event.families) | set(families))),
            model_version=sa.func.coalesce(model_version, EVENTS.c.model_version),
            load_factor=self._value("load_factor", load_factor),
        )
        if explained_by is not None:
            latest["explained_by"] = json.dumps(list(explained_by))
        if s > event.peak.score:
            latest.update(peak_score=s, peak_at=t, **{f"peak_{n}": v for n, v in vals.items()})
            latest["contributions"] = json.dumps(contributions or event.contributions)
        elif contributions and not event.contributions:
            latest["contributions"] = json.dumps(contributions)
        return self._set(db, event.id, **latest)

    @staticmethod
    def _set(db: Connection, event_id: int, **values: Any) -> Event:
        """Update one event and read it back in the same statement (one round trip)."""
        done = db.execute(
            sa.update(EVENTS).where(EVENTS.c.id == event_id).values(**values).returning(*EVENTS.c)
        )
        return event_from_row(done.mappings().one())

    def _get_open(self, event_id: int, db: Connection) -> Event:
        event = self._get(event_id, db)
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
