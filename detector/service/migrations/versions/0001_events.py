"""The events table as llmwatch 0.5 created it.

A SQLite history from then has exactly this table without Alembic's version table;
:func:`detector.service.history_db.migrate` stamps it with this revision instead of running it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_VALUES = ("actual", "expected", "lower", "upper")


def upgrade() -> None:
    double = sa.Float(53)
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("signal", sa.Text, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("start", double, nullable=False),
        sa.Column("end", double),
        sa.Column("updated", double, nullable=False),
        sa.Column("score", double, nullable=False),
        *(sa.Column(n, double) for n in _VALUES),
        sa.Column("peak_score", double, nullable=False),
        sa.Column("peak_at", double, nullable=False),
        *(sa.Column(f"peak_{n}", double) for n in _VALUES),
        sa.Column("detectors", sa.Text, nullable=False),
        sa.Column("contributions", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text),
        sqlite_autoincrement=True,
    )
    # At most one open event per series, enforced by the database.
    op.create_index(
        "events_one_open",
        "events",
        ["signal", "labels"],
        unique=True,
        sqlite_where=sa.text('"end" IS NULL'),
        postgresql_where=sa.text('"end" IS NULL'),
    )
    op.create_index("events_start", "events", ["start"])
    op.create_index("events_signal_start", "events", ["signal", "start"])


def downgrade() -> None:
    op.drop_table("events")
