"""A PostgreSQL history that goes down and comes back: the API says so, the writes wait."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from support.postgres import POSTGRES_BIN, PostgresServer

from detector.core.point import ScoredPoint
from detector.service.api import create_api
from detector.service.history import EventStore

pytestmark = pytest.mark.integration


@pytest.fixture
def server(postgres_server) -> Iterator[PostgresServer]:
    """A server of its own (the session's stays up), started on demand by the test."""
    del postgres_server  # the session fixture's check for the binaries
    own = PostgresServer(POSTGRES_BIN).start()
    yield own
    own.stop()


def test_the_api_answers_503_while_the_history_is_down(server: PostgresServer) -> None:
    store = EventStore(server.url, shard="0/2")
    ev = store.open_event(signal="rps", labels={"m": "a"}, point=ScoredPoint(10.0, score=0.99))
    with TestClient(create_api(None, store, retrain_token=None)) as client:
        assert client.get("/api/v1/anomalies/history").json()["count"] == 1
        server.kill()
        down = client.get("/api/v1/anomalies/history")
        assert down.status_code == 503 and down.headers["retry-after"] == "30"
        assert down.json()["detail"].startswith("the anomaly history does not answer: ")
        with pytest.raises(OperationalError):  # the write fails as a whole
            store.close_event(ev.id, at=40.0)
        server.start()
        back = client.get("/api/v1/anomalies/history")  # no failed request after the restart
        assert back.status_code == 200 and back.json()["data"][0]["end"] is None
        store.close_event(ev.id, at=40.0)
        (event,) = client.get("/api/v1/anomalies/history").json()["data"]
        assert event["end"] is not None and event["shard"] == "0/2"
    store.close()
