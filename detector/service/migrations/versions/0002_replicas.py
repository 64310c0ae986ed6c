"""Columns for a history shared by replicas: who records each event, and what it follows.

``shard`` is the recording replica's ``i/n``; ``explained_by`` (JSON list) and ``load_factor``
let another replica's API describe an open event the way its owner does ("expected 4 at this
load"). Events recorded before this revision read as shard unknown, time of day only.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("shard", sa.Text))
    op.add_column("events", sa.Column("explained_by", sa.Text, nullable=False, server_default="[]"))
    op.add_column("events", sa.Column("load_factor", sa.Float(53)))
    # The API's "open now" read, on a history many replicas share.
    op.create_index(
        "events_open",
        "events",
        ["start"],
        sqlite_where=sa.text('"end" IS NULL'),
        postgresql_where=sa.text('"end" IS NULL'),
    )


def downgrade() -> None:
    op.drop_index("events_open", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("load_factor")
        batch.drop_column("explained_by")
        batch.drop_column("shard")
