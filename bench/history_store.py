"""What the event history costs on SQLite and on PostgreSQL: the figures behind docs/scaling.md's
"what the PostgreSQL side must hold".

A replica writes the history only for its series in an anomaly: each cycle, one transaction per
signal updates every open event (the event log's batch). The API reads the open events
(``/api/v1/anomalies``, every shard's on a shared history) and pages of the history. So for
``--open`` open events, in a history already holding ``--closed`` closed ones, this times:

- **open**: opening them all, in one transaction;
- **record**: one cycle's batch of updates (the median of ``--cycles``), per event;
- **read**: ``open_events()`` (what the anomalies route reads) and one page of 100 of the whole
  history (``query(limit=100)``), medians of 5;
- **size**: bytes per stored event (PostgreSQL: the table with its indexes; SQLite: the file);

on a SQLite file (WAL, the default) and on a real PostgreSQL 15 (Debian's, on loopback, with
fsync on as in production), in the same process, and prints PostgreSQL's time as a ratio of
SQLite's. Nothing here asserts. Usage::

    python bench/history_store.py --open 10,100,1000 --closed 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# The repository ahead of tests/, whose detector/ folder holds tests, not the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sqlalchemy as sa
from support.postgres import PostgresServer

from detector.core.point import ScoredPoint
from detector.service.history import EventStore
from detector.service.history_db import EVENTS

T0 = 1_767_571_200.0
STEP = 30.0


def _fill(store: EventStore, closed: int) -> None:
    """``closed`` past events, written in bulk (how they got there is not what is timed)."""
    rows = [
        {
            "signal": "latency",
            "labels": json.dumps({"gpu": str(k % 8), "model": f"old{k % 500}"}),
            "start": T0 - 86_400 + k,
            "end": T0 - 86_340 + k,
            "updated": T0 - 86_340 + k,
            "score": 0.99,
            "peak_score": 0.99,
            "peak_at": T0 - 86_400 + k,
            "detectors": '["seasonal"]',
            "contributions": "{}",
            "shard": "0/1",
        }
        for k in range(closed)
    ]
    with store.engine.begin() as db:
        for first in range(0, closed, 10_000):
            db.execute(sa.insert(EVENTS), rows[first : first + 10_000])


def _size(store: EventStore) -> float:
    """Bytes the events take: the table with its indexes, or the SQLite file after a checkpoint."""
    with store.engine.connect() as db:
        if store.path is None:
            return db.execute(sa.text("SELECT pg_total_relation_size('events')")).scalar_one()
        db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return store.path.stat().st_size


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(location: str | Path, n_open: int, closed: int, cycles: int) -> dict[str, float]:
    """Seconds for each figure of the module's docstring, on the history at ``location``."""
    store = EventStore(location, shard="0/1")
    try:
        _fill(store, closed)
        began = time.perf_counter()
        with store.batch():
            ids = [
                store.open_event(
                    signal="latency",
                    labels={"model": f"m{i}"},
                    point=ScoredPoint(T0, 3.0, 1.0, 0.8, 1.2, 0.99),
                    families=["seasonal"],
                    model_version="v1",
                ).id
                for i in range(n_open)
            ]
        out = {"open": time.perf_counter() - began}
        step = iter(range(1, 10**9))

        def cycle() -> None:
            at = T0 + STEP * next(step)
            with store.batch():
                for i in ids:
                    store.update_event(i, ScoredPoint(at, 3.1, 1.0, 0.8, 1.2, 0.995))

        out["record"] = _median_s(cycle, cycles)
        out["open_events"] = _median_s(store.open_events, 5)
        out["page"] = _median_s(lambda: store.query(limit=100), 5)
        out["bytes_per_event"] = _size(store) / (closed + n_open)
        return out
    finally:
        store.close()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=_ints, default=[10, 100, 1000], help="open events")
    parser.add_argument("--closed", type=int, default=100_000, help="closed events already held")
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    server = PostgresServer(durable=True).start()
    rows = []
    try:
        for n in args.open:
            with tempfile.TemporaryDirectory(prefix="llmwatch-history-bench-") as tmp:
                lite = measure(Path(tmp) / "history.sqlite", n, args.closed, args.cycles)
            pg = measure(server.new_database(f"bench{n}"), n, args.closed, args.cycles)
            rows.append((n, lite, pg))
    finally:
        server.stop()
    print(f"history holding {args.closed:,} closed events; per open event where it says so")
    print("| open events | figure | SQLite | PostgreSQL | PostgreSQL / SQLite |")
    print("|---|---|---|---|---|")
    for n, lite, pg in rows:
        a, b = lite["bytes_per_event"], pg["bytes_per_event"]
        print(f"| {n:,} | bytes per event stored | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
        for key, per in (("open", n), ("record", n), ("open_events", 1), ("page", 1)):
            unit = "µs per event" if per > 1 else "ms"
            scale = 1e6 / per if per > 1 else 1e3
            a, b = lite[key] * scale, pg[key] * scale
            print(f"| {n:,} | {key} | {a:,.0f} {unit} | {b:,.0f} {unit} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
