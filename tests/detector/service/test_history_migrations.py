"""The history's schema under Alembic: a fresh database, a 0.5 file, replicas starting together."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from detector.core.point import ScoredPoint
from detector.service.config import load_settings
from detector.service.history import Event, EventStore, check_history
from detector.service.history_db import create_history_engine, migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[3] / "detector" / "service" / "migrations"

# The schema llmwatch 0.5 created by hand, before the migrations existed.
_SCHEMA_0_5 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, signal TEXT NOT NULL, labels TEXT NOT NULL,
    start REAL NOT NULL, end REAL, updated REAL NOT NULL, score REAL NOT NULL,
    actual REAL, expected REAL, lower REAL, upper REAL, peak_score REAL NOT NULL,
    peak_at REAL NOT NULL, peak_actual REAL, peak_expected REAL, peak_lower REAL,
    peak_upper REAL, detectors TEXT NOT NULL, contributions TEXT NOT NULL, model_version TEXT
);
CREATE UNIQUE INDEX events_one_open ON events(signal, labels) WHERE end IS NULL;
CREATE INDEX events_start ON events(start);
CREATE INDEX events_signal_start ON events(signal, start);
"""


def _load_aware_event(store: EventStore, at: float, *, load_factor: float) -> Event:
    """An event of a latency expected at the load of its rows."""
    return store.open_event(
        signal="latency",
        labels={"model": "a"},
        point=ScoredPoint(at, 5.0, 2.0, 1.5, 2.5, 0.99),
        explained_by=["requests_per_second"],
        load_factor=load_factor,
    )


def _revision(location: Path | str) -> str:
    engine = create_history_engine(location)
    try:
        with engine.connect() as db:
            return db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()


def test_a_history_from_0_5_is_stamped_and_upgraded_keeping_its_events(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_0_5)
    row = "INSERT INTO events VALUES (NULL,'rps',?,?,?,?,0.97,5,1,0,2,0.99,?,6,1,0,2,?,'{}','v1')"
    db.execute(row, ('{"model": "m"}', 100.0, 160.0, 160.0, 130.0, '["seasonal"]'))
    db.execute(row, ('{"model": "n"}', 200.0, None, 230.0, 230.0, "[]"))
    db.commit()
    db.close()
    with EventStore(path, shard="0/1") as store:
        assert store.revision == _revision(path) == "0002"
        closed, still = store.query().items[::-1]
        assert (closed.start, closed.end, closed.peak.score, closed.families) == (
            100.0,
            160.0,
            0.99,
            ["seasonal"],
        )
        assert closed.shard is None and closed.explained_by == () and closed.load_factor is None
        # The open one resumes: the unique index still holds one open event per series.
        again = store.open_event(
            signal="rps", labels={"model": "n"}, point=ScoredPoint(260.0, score=0.98)
        )
        assert again.id == still.id and again.peak.score == 0.99
        new = _load_aware_event(store, 300.0, load_factor=1.6)
        assert new.shard == "0/1" and new.explained_by == ("requests_per_second",)
        assert new.load_factor == 1.6
    with EventStore(path) as store:  # a second open: already at the head, nothing to do
        assert store.query().total == 3


def test_replicas_starting_together_migrate_one_database_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start(i: int) -> None:
        try:
            barrier.wait()
            with EventStore(postgres_url, shard=f"{i}/3") as store:
                store.open_event(
                    signal="rps", labels={"i": str(i)}, point=ScoredPoint(10.0, score=0.99)
                )
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert _revision(postgres_url) == "0002"
    with EventStore(postgres_url) as store:
        assert sorted(e.shard for e in store.open_events()) == ["0/3", "1/3", "2/3"]
    engine = create_history_engine(postgres_url)
    try:
        indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes("events")}
    finally:
        engine.dispose()
    assert indexes["events_one_open"]["unique"]
    assert {"events_open", "events_start", "events_signal_start"} <= set(indexes)


def test_downgrade_and_upgrade_again(postgres_url: str) -> None:
    EventStore(postgres_url).close()
    engine = create_history_engine(postgres_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as db:
            config.attributes["connection"] = db
            command.downgrade(config, "0001")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("events")}
        assert "shard" not in columns and "labels" in columns
        assert migrate(engine) == "0002"
    finally:
        engine.dispose()


def test_the_sql_can_be_read_before_it_runs() -> None:
    url = "url=postgresql://llmwatch@db.example:5432/llmwatch"
    cmd = [str(Path(sys.executable).with_name("alembic")), "-c", str(MIGRATIONS / "alembic.ini")]
    done = subprocess.run(
        [*cmd, "-x", url, "upgrade", "head", "--sql"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    sql = done.stdout
    assert "CREATE TABLE events" in sql and 'WHERE "end" IS NULL' in sql
    assert "ALTER TABLE events ADD COLUMN shard TEXT" in sql


def test_bad_history_urls_are_refused_naming_the_key_and_hiding_the_password() -> None:
    with pytest.raises(ValueError, match=r"history_url 'mysql://u:\*\*\*@h/db': the scheme"):
        load_settings(None, history_url="mysql://u:secret@h/db")
    settings = load_settings(None, history_url="postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in repr(settings) and settings.history_location.endswith(":1/db")
    with pytest.raises(ValueError, match=r"postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db does"):
        check_history(settings.history_location)


def test_a_new_history_records_what_other_replicas_need(postgres_url: str) -> None:
    with EventStore(postgres_url, shard="2/3") as store:
        ev = _load_aware_event(store, 10.0, load_factor=1.4)
        ev = store.update_event(ev.id, ScoredPoint(40.0, 6.0, 2.1, 1.6, 2.6, 0.995), load_factor=2)
        engine = store.engine
        with engine.connect() as db:
            raw = db.execute(sa.text("SELECT explained_by, shard FROM events")).one()
    assert json.loads(raw[0]) == ["requests_per_second"] and raw[1] == "2/3"  # kept
    assert ev.load_factor == 2.0 and ev.peak.actual == 6.0
