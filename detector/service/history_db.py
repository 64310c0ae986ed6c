"""Where the anomaly history lives: the table, the database behind it, and its schema migrations.

The history goes through SQLAlchemy, so one store serves two databases:

- **SQLite** (a file path, or ``sqlite:///path``), the embedded default: one process writes it;
  WAL mode lets the REST API read while the service writes.
- **PostgreSQL** (``postgresql://user:password@host:5432/db``, driven by psycopg 3), for sharded
  deployments: every replica writes its own shard's events, and any replica reads them all.

The schema is Alembic's (:mod:`detector.service.migrations`): opening a store upgrades its
database to the newest revision, under a PostgreSQL advisory lock so that replicas starting
together migrate once. A SQLite file written before the migrations existed (llmwatch 0.5 and
earlier) holds revision ``0001``'s table without Alembic's version table; it is stamped ``0001``
and upgraded like any other.

>>> database_url("var/history.sqlite"), database_url("postgresql://u:pw@db:5432/h")
('sqlite:///var/history.sqlite', 'postgresql+psycopg://u:pw@db:5432/h')
>>> redacted("postgresql+psycopg://u:pw@db:5432/h")
'postgresql+psycopg://u:***@db:5432/h'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

__all__ = [
    "EVENTS",
    "SCHEMES",
    "create_history_engine",
    "database_url",
    "is_sqlite",
    "migrate",
    "redacted",
    "sqlite_path",
]

SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgres")
_MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed number: the key of the lock replicas take while one of them migrates.
_MIGRATION_LOCK = 0x6C6C6D77

_metadata = sa.MetaData()
# The newest revision's table, as the code reads and writes it; each migration keeps its own
# copy of the columns it adds, so that old revisions do not change when this one does.
# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY is the row id).
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EVENTS = sa.Table(
    "events",
    _metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("signal", sa.Text, nullable=False),
    sa.Column("labels", sa.Text, nullable=False),  # canonical JSON: sorted keys
    sa.Column("start", sa.Float(53), nullable=False),
    sa.Column("end", sa.Float(53)),  # NULL while open
    sa.Column("updated", sa.Float(53), nullable=False),
    sa.Column("score", sa.Float(53), nullable=False),  # latest
    *(sa.Column(n, sa.Float(53)) for n in ("actual", "expected", "lower", "upper")),
    sa.Column("peak_score", sa.Float(53), nullable=False),
    sa.Column("peak_at", sa.Float(53), nullable=False),
    *(sa.Column(f"peak_{n}", sa.Float(53)) for n in ("actual", "expected", "lower", "upper")),
    sa.Column("detectors", sa.Text, nullable=False),  # JSON list: every family that fired
    sa.Column("contributions", sa.Text, nullable=False),  # JSON object, as of the peak
    sa.Column("model_version", sa.Text),
    # Revision 0002: the replica that records the event ("i/n"), and what its expectation
    # follows, so that another replica's API describes it as the owner would.
    sa.Column("shard", sa.Text),
    sa.Column("explained_by", sa.Text, nullable=False, server_default="[]"),  # JSON list
    sa.Column("load_factor", sa.Float(53)),  # of the latest point
    sqlite_autoincrement=True,
)


def database_url(location: Path | str) -> str:
    """The SQLAlchemy URL of a history location: a file path means SQLite.

    ``postgresql://`` and ``postgres://`` name psycopg 3 as the driver (SQLAlchemy's default
    for them is psycopg2, which llmwatch does not install). Raises ``ValueError`` for any
    other scheme.
    """
    text = str(location)
    if "://" not in text:
        return f"sqlite:///{text}"
    scheme, rest = text.split("://", 1)
    if scheme not in SCHEMES:
        raise ValueError(
            f"history_url {redacted(text)!r}: the scheme must be one of {list(SCHEMES)}"
        )
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


def sqlite_path(location: Path | str) -> Path | None:
    """The file of a SQLite history; None for a database server (or SQLite in memory)."""
    url = make_url(database_url(location))
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show only its scheme
        return url.split("://", 1)[0] + "://…" if "://" in url else url


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether the database is SQLite (else PostgreSQL)."""
    return engine.dialect.name == "sqlite"


def create_history_engine(location: Path | str) -> Engine:
    """An engine for the history at ``location`` (a SQLite path or a database URL).

    SQLite connections wait up to 30 s for a lock and begin their transactions explicitly, so
    that a read sees one snapshot and a batch of writes is one transaction. PostgreSQL
    connections are checked before use, so a restarted server costs no failed request.
    """
    url = database_url(location)
    if not url.startswith("sqlite"):
        try:
            return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"history_url {redacted(url)!r} needs the {exc.name} package: "
                "pip install 'llmwatch[postgres]'"
            ) from None
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30.0})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        # The driver's own transaction handling off: SQLAlchemy's BEGIN below is the one.
        dbapi.isolation_level = None
        dbapi.execute("PRAGMA busy_timeout=30000")
        dbapi.execute("PRAGMA journal_mode=WAL")  # kept by the file; a no-op once set

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def migrate(engine: Engine) -> str | None:
    """Upgrade the history's schema to the newest revision; returns that revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.begin() as conn:
        if not is_sqlite(conn):
            # Held to the end of this transaction: replicas starting together migrate once.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        config.attributes["connection"] = conn
        tables = set(sa.inspect(conn).get_table_names())
        if "events" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")  # a history from before the migrations
        command.upgrade(config, "head")
    return head
