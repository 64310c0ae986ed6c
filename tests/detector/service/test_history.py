"""Tests of the anomaly event store: peaks, resume after a restart, queries, concurrent reads."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from detector.core.point import ScoredPoint
from detector.service.history import EventError, EventStore

pytestmark = pytest.mark.integration

LABELS = {"model": "qwen", "instance": "a:1"}


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The embedded SQLite file, and a real PostgreSQL database (the sharded deployments')."""
    if request.param == "sqlite":
        return tmp_path / "var" / "history.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(location: Path | str):
    with EventStore(location) as s:
        yield s


def test_event_lifecycle_tracks_the_peak(store: EventStore) -> None:
    ev = store.open_event(
        signal="latency_p95",
        labels=LABELS,
        point=ScoredPoint(1000.0, actual=2.0, expected=1.0, lower=0.8, upper=1.2, score=0.96),
        families=["seasonal"],
        model_version="v1",
    )
    assert ev.is_open and ev.start == 1000.0 and ev.peak.score == 0.96 and ev.labels == LABELS
    ev = store.update_event(
        ev.id,
        ScoredPoint(1030.0, actual=3.0, expected=1.1, lower=0.9, upper=1.3, score=0.999),
        families=["iforest"],
        contributions={"a_level": 0.2, "b_jump": -0.7, "c": float("nan")},
    )
    ev = store.update_event(ev.id, ScoredPoint(1060.0, actual=2.5, expected=1.1, score=0.97))
    assert (ev.last.score, ev.last.actual, ev.last.lower) == (0.97, 2.5, None)  # latest point
    assert (ev.peak.score, ev.peak.at, ev.peak.actual, ev.peak.upper) == (0.999, 1030.0, 3.0, 1.3)
    assert ev.families == ["iforest", "seasonal"]  # every family that fired
    assert list(ev.contributions) == ["b_jump", "a_level"]  # from the peak, largest first
    assert ev.model_version == "v1"
    closed = store.close_event(ev.id, at=1090.0)
    assert closed.end == 1090.0 and not closed.is_open
    # Floats as written, also where SQLite's RETURNING hands back whole numbers as integers.
    assert all(type(x) is float for x in (closed.start, closed.end, closed.last.at, closed.peak.at))
    assert store.get(ev.id) == closed
    with pytest.raises(EventError, match="already closed"):
        store.update_event(ev.id, ScoredPoint(1100.0, score=0.99))
    with pytest.raises(EventError, match="already closed"):
        store.close_event(ev.id, at=1100.0)
    with pytest.raises(EventError, match="no event with id 999"):
        store.update_event(999, ScoredPoint(1.0, score=0.5))


def test_contributions_come_from_the_peak_or_the_first_point_with_any(store: EventStore) -> None:
    # The isolation forest fires on some points only; those without contributions keep what is
    # recorded, the first with some records them, a later peak with some replaces them.
    ev = store.open_event(signal="s", labels=LABELS, point=ScoredPoint(0.0, score=0.96))
    ev = store.update_event(ev.id, ScoredPoint(30.0, score=0.9), contributions={"a:z": 0.3})
    assert ev.contributions == {"a:z": 0.3}
    ev = store.update_event(ev.id, ScoredPoint(60.0, score=0.99))  # a peak the forest had no say in
    assert ev.peak.score == 0.99 and ev.contributions == {"a:z": 0.3}
    ev = store.update_event(ev.id, ScoredPoint(90.0, score=0.97), contributions={"b:z": 0.5})
    assert ev.contributions == {"a:z": 0.3}  # not a peak: the first ones stay
    ev = store.update_event(
        ev.id, ScoredPoint(120.0, score=0.999), contributions={"b:z": 0.4, "a:z": 0.1}
    )
    assert list(ev.contributions) == ["b:z", "a:z"] and ev.peak.at == 120.0


def test_bad_values(store: EventStore) -> None:
    with pytest.raises(EventError, match="score"):
        store.open_event(signal="s", labels={}, point=ScoredPoint(1.0, score=math.nan))
    with pytest.raises(EventError, match="finite unix time"):
        store.open_event(signal="s", labels={}, point=ScoredPoint(math.inf, score=0.9))
    with pytest.raises(EventError, match="not a number"):
        store.open_event(signal="s", labels={}, point=ScoredPoint(1.0, actual="x", score=0.9))
    ev = store.open_event(signal="s", labels={}, point=ScoredPoint(1.0, actual=math.nan, score=0.9))
    assert ev.last.actual is None and ev.peak.actual is None
    assert store.query().total == 1


def test_open_twice_resumes_instead_of_duplicating(store: EventStore) -> None:
    a = store.open_event(signal="rps", labels=LABELS, point=ScoredPoint(10.0, score=0.96))
    b = store.open_event(
        signal="rps", labels=dict(reversed(LABELS.items())), point=ScoredPoint(40.0, score=0.98)
    )
    assert a.id == b.id and b.start == 10.0 and b.peak.score == 0.98
    other = store.open_event(
        signal="rps", labels={"model": "other"}, point=ScoredPoint(40.0, score=0.98)
    )
    assert other.id != a.id
    store.close_event(a.id, at=50.0)
    again = store.open_event(signal="rps", labels=LABELS, point=ScoredPoint(60.0, score=0.97))
    assert again.id not in (a.id, other.id)
    assert [e.id for e in store.open_events()] == [other.id, again.id]


_CRASH = """
import os, sys
from detector.core.point import ScoredPoint
from detector.service.history import EventStore
store = EventStore(sys.argv[1])
ev = store.open_event(signal="rps", labels={"model": "m"}, point=ScoredPoint(100.0, score=0.97))
store.update_event(ev.id, ScoredPoint(130.0, actual=5.0, score=0.99))
os._exit(0)  # killed: no close(), no clean shutdown
"""


def test_restart_resumes_the_open_event(location: Path | str) -> None:
    subprocess.run([sys.executable, "-c", _CRASH, str(location)], check=True, timeout=60)
    with EventStore(location) as store:
        (resumed,) = store.open_events()
        assert (resumed.start, resumed.peak.score, resumed.last.actual) == (100.0, 0.99, 5.0)
        ev = store.open_event(
            signal="rps", labels={"model": "m"}, point=ScoredPoint(160.0, score=0.95)
        )
        assert ev.id == resumed.id and ev.last.at == 160.0
        store.close_event(ev.id, at=190.0)
    with EventStore(location) as store:
        assert store.open_events() == [] and store.query().total == 1


def test_query_overlap_filter_and_pages(store: EventStore) -> None:
    # Events [0,10], [20,30], [40, open) for "a"; [5,25] for "b".
    for start, end in [(0, 10), (20, 30), (40, None)]:
        ev = store.open_event(signal="a", labels={}, point=ScoredPoint(start, score=0.96))
        if end is not None:
            store.close_event(ev.id, at=end)
    store.close_event(
        store.open_event(signal="b", labels={}, point=ScoredPoint(5, score=0.96)).id, at=25
    )
    assert [e.start for e in store.query().items] == [40, 20, 5, 0]  # newest first
    assert [e.start for e in store.query(start=12, end=22).items] == [20, 5]
    assert [e.start for e in store.query(start=1000).items] == [40]  # still open
    assert [e.start for e in store.query(end=4).items] == [0]
    assert [e.start for e in store.query(signal="a", start=10).items] == [40, 20, 0]
    assert store.query(signal="nope").total == 0
    first = store.query(limit=3)
    assert first.total == 4 and len(first.items) == 3 and first.next_offset == 3
    last = store.query(limit=3, offset=first.next_offset)
    assert [e.start for e in last.items] == [0] and last.next_offset is None
    beyond = store.query(offset=10)
    assert beyond.items == [] and beyond.total == 4 and beyond.next_offset is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"start": 10.0, "end": 5.0}, "after end"),
        ({"limit": 0}, "limit=0"),
        ({"limit": 10_001}, "limit=10001"),
        ({"offset": -1}, "offset=-1"),
        ({"start": math.nan}, "start=nan"),
    ],
)
def test_query_refuses_bad_arguments(store: EventStore, kwargs, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        store.query(**kwargs)


def test_readers_see_consistent_pages_while_a_writer_writes(store: EventStore) -> None:
    n_series, rounds = 5, 40
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for r in range(rounds):
                for s in range(n_series):
                    ev = store.open_event(
                        signal="sig",
                        labels={"s": str(s)},
                        point=ScoredPoint(r * 10 + s, score=0.9 + r / 1000),
                    )
                    if r % 4 == 3:
                        store.close_event(ev.id, at=r * 10 + s + 1)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                page = store.query(limit=10_000)
                assert page.total == len(page.items)
                opened = store.open_events()
                labels = [e.labels["s"] for e in opened]
                assert len(labels) == len(set(labels))  # never two open events of one series
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # Closed every 4th round: rounds / 4 events per series, all closed at the end.
    assert store.query(limit=10_000).total == n_series * rounds // 4
    assert store.open_events() == []


def test_two_writers_opening_the_same_series_get_one_event(store: EventStore) -> None:
    ids: list[int] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        barrier.wait()
        ids.append(
            store.open_event(signal="x", labels=LABELS, point=ScoredPoint(1.0, score=0.99)).id
        )

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(set(ids)) == 1 and len(store.open_events()) == 1


def test_wal_mode(tmp_path: Path) -> None:
    EventStore(tmp_path / "history.sqlite").close()
    db = sqlite3.connect(tmp_path / "history.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
