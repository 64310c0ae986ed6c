"""Fixtures shared by every test suite: real Prometheus, VictoriaMetrics, PostgreSQL, a target.

See :mod:`support.servers` for what each server offers. Each factory call starts a fresh server
on a free 127.0.0.1 port with its own data folder under ``tmp_path``; all are stopped at the end
of the test. PostgreSQL (:mod:`support.postgres`) is one server per session, ``postgres_url`` a
fresh database on it per test. A test using one fails when the binary is not installed
(:mod:`support.requires`).

Every test is ``unit`` unless its module is marked ``integration`` (real servers, processes,
whole corpora): ``make check`` runs the unit tests alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from support.postgres import POSTGRES_BIN, PostgresServer
from support.requires import missing, need_binary
from support.servers import (
    PROMETHEUS,
    VICTORIA_METRICS,
    PrometheusServer,
    Series,
    SyntheticExporter,
    VictoriaMetricsServer,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)


def _need(binary: str) -> None:
    need_binary(binary, "make stack-tools, or apt-get install prometheus victoria-metrics")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """``factory(backfill=[Series...], targets=[...], rule_files=[...], start=True, **kw)``."""
    _need(PROMETHEUS)
    started: list[PrometheusServer] = []

    def factory(
        *, backfill: list[Series] | None = None, start: bool = True, **kwargs: Any
    ) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        server = PrometheusServer(workdir=workdir, **kwargs)
        started.append(server)
        if backfill:
            server.backfill(backfill)
        return server.start() if start else server

    yield factory
    for server in started:
        server.resume()
        server.stop()


@pytest.fixture
def vm_factory(tmp_path: Path) -> Iterator[Callable[..., VictoriaMetricsServer]]:
    """``factory(series=[Series...], targets=[...], **kw)``: a running VictoriaMetrics."""
    _need(VICTORIA_METRICS)
    started: list[VictoriaMetricsServer] = []

    def factory(*, series: list[Series] | None = None, **kwargs: Any) -> VictoriaMetricsServer:
        workdir = tmp_path / f"victoria-{len(started)}"
        workdir.mkdir()
        server = VictoriaMetricsServer(workdir=workdir, **kwargs)
        started.append(server)
        server.start()
        if series:
            server.import_series(series)
        return server

    yield factory
    for server in started:
        server.resume()
        server.stop()


@pytest.fixture
def synthetic_exporter() -> Iterator[SyntheticExporter]:
    """A running scrape target; ``.set(name, value, **labels)``, ``.target`` is host:port."""
    exporter = SyntheticExporter().start()
    yield exporter
    exporter.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session: tests get isolation from ``postgres_url``'s databases."""
    if POSTGRES_BIN is None:
        missing(
            "PostgreSQL (/usr/lib/postgresql/*/bin)",
            "make stack-tools, or apt-get install postgresql",
        )
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL."""
    return postgres_server.new_database(f"t{uuid4().hex[:12]}")
