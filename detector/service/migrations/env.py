"""Alembic's entry point for the history's migrations.

:func:`detector.service.history_db.migrate` runs them on a connection it passes in
``config.attributes["connection"]``, inside its own transaction. From the command line (for a
database administrator who wants to see the SQL first), with ``alembic.ini`` beside this file:
``alembic -c detector/service/migrations/alembic.ini -x url=postgresql://… upgrade head --sql``.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    from detector.service.history_db import database_url

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the history's database as -x url=postgresql://… or sqlite:///…")
    context.configure(url=database_url(url), literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
