"""The PostgreSQL test fixtures work: the server answers, and each test gets its own database."""

from __future__ import annotations

from uuid import uuid4

import psycopg
import pytest
from support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_postgres_url_answers_queries(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_each_postgres_url_is_a_separate_database(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    # A second database made as the postgres_url fixture makes them.
    other = postgres_server.new_database(f"t{uuid4().hex[:12]}")
    assert other != postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("create table only_here (x int)")
    with psycopg.connect(other) as conn:
        found = conn.execute("select to_regclass('only_here')").fetchone()
    assert found == (None,)
