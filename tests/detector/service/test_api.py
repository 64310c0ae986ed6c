"""Tests of the REST API against an in-test ServiceView and a real EventStore."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from detector.core.point import ScoredPoint
from detector.service.api import create_api
from detector.service.history import EventStore
from detector.service.views import (
    ActiveAnomaly,
    ModelStatus,
    RetrainUnavailable,
    RunStats,
    SeriesStatus,
    ServiceView,
)

TOKEN = "s3cret-token"
T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _series(signal: str, labels: dict[str, str], actual: float, score: float) -> SeriesStatus:
    load = {"explained_by": ("rps",), "load_factor": 1.6} if signal.startswith("latency") else {}
    return SeriesStatus(
        **load,
        signal=signal,
        labels=labels,
        point=ScoredPoint(T0 + 600, actual=actual, expected=1.0, lower=0.8, upper=1.2, score=score),
        family_scores={"seasonal": score, "levelshift": 0.1},
        anomalous=score > 0.95,
        stale=math.isnan(actual),
        model_version="20260105T000000000000Z-abcdef",
    )


@dataclass
class FakeView:
    """A ServiceView holding records as the service would, and the retrains it was asked for."""

    names: list[str] = field(default_factory=lambda: ["latency_p95", "rps", "gpu_memory"])
    healthy: tuple[bool, str] = (True, "ok")
    busy: bool = False
    retrains: list[str | None] = field(default_factory=list)

    def series(self, signal: str | None = None) -> list[SeriesStatus]:
        rows = [
            _series("latency_p95", {"model": "qwen"}, 2.4, 0.99),
            _series("latency_p95", {"model": "llama"}, 1.05, 0.2),
            _series("rps", {}, math.nan, 0.0),  # a NaN sample
        ]
        return [r for r in rows if signal in (None, r.signal)]

    def signal_names(self) -> list[str]:
        return list(self.names)

    def active_anomalies(self) -> list[ActiveAnomaly]:
        return [
            ActiveAnomaly(
                event_id=1,
                signal="latency_p95",
                labels={"model": "qwen"},
                since=T0 + 300,
                peak_score=0.999,
                point=ScoredPoint(
                    T0 + 600, actual=2.4, expected=1.0, lower=0.8, upper=1.2, score=0.99
                ),
                families=["seasonal", "iforest"],
                contributions={"latency_p95 level": 3.1, "rps level": -0.2},
                explained_by=("rps",),
                load_factor=1.6,
            )
        ]

    def models(self) -> list[ModelStatus]:
        return [
            ModelStatus(
                signal="latency_p95",
                version="20260105T000000000000Z-abcdef",
                created_at=T0,
                training_start=T0 - 30 * 86400,
                training_end=T0,
                series=2,
                families=["seasonal", "iforest"],
                evaluation={"f1": 0.91, "nab": math.nan},
            ),
            ModelStatus(
                signal="gpu_memory",
                version=None,
                created_at=None,
                training_start=None,
                training_end=None,
                series=0,
                families=[],
            ),
        ]

    def registry_root(self) -> Path:
        return Path("/srv/llmwatch/models")

    def run_stats(self) -> RunStats:
        return RunStats()

    def health(self) -> tuple[bool, str]:
        return self.healthy

    def request_retrain(self, signal: str | None = None) -> str:
        if self.busy:
            raise RetrainUnavailable("a refit of every signal is already running")
        self.retrains.append(signal)
        return f"job-{len(self.retrains)}"


def test_fake_view_implements_the_protocol() -> None:
    view: ServiceView = FakeView()  # checked by type checkers; the names by this test
    for name in ServiceView.__dict__:
        if not name.startswith("_"):
            assert callable(getattr(view, name)), name


@pytest.fixture
def events(tmp_path: Path):
    with EventStore(tmp_path / "history.sqlite") as store:
        # latency: one closed event on day 1, one open since day 2; rps: one on day 1.
        ev = store.open_event(
            signal="latency_p95",
            labels={"model": "qwen"},
            point=ScoredPoint(T0 + 3600, actual=2.0, score=0.97),
        )
        store.update_event(
            ev.id,
            ScoredPoint(T0 + 3660, actual=3.0, expected=1.0, lower=0.8, upper=1.2, score=0.995),
        )
        store.close_event(ev.id, at=T0 + 7200)
        store.close_event(
            store.open_event(signal="rps", labels={}, point=ScoredPoint(T0 + 5000, score=0.96)).id,
            at=T0 + 5100,
        )
        store.open_event(
            signal="latency_p95",
            labels={"model": "qwen"},
            point=ScoredPoint(T0 + 86400, score=0.99),
            families=["seasonal"],
        )
        yield store


@pytest.fixture
def view() -> FakeView:
    return FakeView()


@pytest.fixture
def client(view: FakeView, events: EventStore):
    with TestClient(create_api(view, events, retrain_token=TOKEN)) as c:
        yield c


def test_active_anomalies(client: TestClient) -> None:
    body = client.get("/api/v1/anomalies").json()
    assert body["count"] == 1
    (a,) = body["data"]
    assert a["signal"] == "latency_p95" and a["labels"] == {"model": "qwen"}
    assert a["since"] == "2026-01-05T00:05:00Z"
    assert (a["peak_score"], a["score"], a["actual"], a["expected"]) == (0.999, 0.99, 2.4, 1.0)
    assert (a["lower"], a["upper"]) == (0.8, 1.2)
    assert a["detectors"] == ["seasonal", "iforest"]
    assert list(a["contributions"]) == ["latency_p95 level", "rps level"]
    # The expectation is the one for the load of the moment, and the text says so.
    assert a["expected_for"] == "this load" and a["explained_by"] == ["rps"]
    assert a["load_factor"] == 1.6
    assert a["summary"] == "latency_p95 2.4, expected 1 at this load (band 0.8-1.2)"
    assert client.get("/api/v1/anomalies", params={"signal": "rps"}).json()["count"] == 0


def test_history_filters_and_pages(client: TestClient) -> None:
    everything = client.get("/api/v1/anomalies/history").json()
    assert everything["count"] == 3 and everything["next_offset"] is None
    assert [e["signal"] for e in everything["data"]] == ["latency_p95", "rps", "latency_p95"]
    closed = everything["data"][2]
    assert closed["start"] == "2026-01-05T01:00:00Z" and closed["end"] == "2026-01-05T02:00:00Z"
    assert (closed["peak_score"], closed["actual"], closed["expected"]) == (0.995, 3.0, 1.0)
    assert not closed["open"] and everything["data"][0]["open"]
    day1 = {"start": "2026-01-05T00:00:00Z", "end": str(T0 + 86399)}
    got = client.get("/api/v1/anomalies/history", params=day1).json()
    assert got["count"] == 2
    got = client.get("/api/v1/anomalies/history", params={**day1, "signal": "rps"}).json()
    assert [e["signal"] for e in got["data"]] == ["rps"]
    page = client.get("/api/v1/anomalies/history", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["next_offset"] == 2 and page["count"] == 3
    rest = client.get("/api/v1/anomalies/history", params={"limit": 2, "offset": 2}).json()
    assert len(rest["data"]) == 1 and rest["next_offset"] is None
    naive = client.get("/api/v1/anomalies/history", params={"start": "2026-01-06T00:00:00"})
    assert naive.json()["count"] == 1  # naive times are UTC


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"start": "yesterday"}, "neither ISO-8601 nor unix seconds"),
        ({"end": "nan"}, "out of range"),
        ({"start": "-5"}, "out of range"),
        ({"start": "2026-01-06", "end": "2026-01-05"}, "after end"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 5000}, "less than or equal to 1000"),
        ({"offset": -1}, "greater than or equal to 0"),
        ({"signal": "../etc"}, "pattern"),
    ],
)
def test_history_bad_input_is_422_with_a_reason(client: TestClient, params, reason) -> None:
    response = client.get("/api/v1/anomalies/history", params=params)
    assert response.status_code == 422
    assert reason in str(response.json()["detail"])


def test_signals(client: TestClient) -> None:
    body = client.get("/api/v1/signals").json()
    assert [s["name"] for s in body["data"]] == ["latency_p95", "rps", "gpu_memory"]
    latency, rps, gpu = body["data"]
    assert [s["labels"] for s in latency["series"]] == [{"model": "qwen"}, {"model": "llama"}]
    first = latency["series"][0]
    assert (first["actual"], first["expected"], first["lower"], first["upper"]) == (
        2.4,
        1.0,
        0.8,
        1.2,
    )
    assert first["anomalous"] and first["detector_scores"]["seasonal"] == 0.99
    assert rps["series"][0]["actual"] is None and rps["series"][0]["stale"]  # NaN -> null
    assert (first["expected_for"], first["explained_by"], first["load_factor"]) == (
        "this load",
        ["rps"],
        1.6,
    )
    assert rps["series"][0]["expected_for"] == "this time of day"
    assert rps["series"][0]["explained_by"] == [] and rps["series"][0]["load_factor"] is None
    assert gpu["series"] == []
    assert (body["series_total"], body["limit"], body["offset"]) == (3, 1000, 0)
    one = client.get("/api/v1/signals/rps")
    assert one.status_code == 200 and one.json()["name"] == "rps"
    missing = client.get("/api/v1/signals/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_models(client: TestClient) -> None:
    body = client.get("/api/v1/models").json()
    assert body["count"] == 2 and body["registry_root"] == "/srv/llmwatch/models"
    served, unfitted = body["data"]
    assert served["version"] == "20260105T000000000000Z-abcdef"
    assert served["training_start"] == "2025-12-06T00:00:00Z"
    assert served["evaluation"] == {"f1": 0.91, "nab": None}
    assert unfitted["version"] is None and unfitted["created_at"] is None


def test_retrain_needs_the_bearer_token(client: TestClient, view: FakeView) -> None:
    none = client.post("/api/v1/models/retrain")
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert "bearer token is required" in none.json()["detail"]
    wrong = client.post("/api/v1/models/retrain", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"]
    basic = client.post("/api/v1/models/retrain", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    assert view.retrains == []
    ok = client.post("/api/v1/models/retrain", headers=AUTH)
    assert ok.status_code == 202 and ok.json() == {
        "job_id": "job-1",
        "signal": None,
        "status": "queued",
    }
    one = client.post("/api/v1/models/retrain", headers=AUTH, json={"signal": "rps"})
    assert one.status_code == 202 and one.json()["signal"] == "rps"
    assert view.retrains == [None, "rps"]


def test_retrain_refusals(client: TestClient, view: FakeView) -> None:
    unknown = client.post("/api/v1/models/retrain", headers=AUTH, json={"signal": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    extra = client.post("/api/v1/models/retrain", headers=AUTH, json={"signal": "rps", "x": 1})
    assert extra.status_code == 422
    view.busy = True
    busy = client.post("/api/v1/models/retrain", headers=AUTH, json={"signal": "rps"})
    assert busy.status_code == 409 and "already running" in busy.json()["detail"]
    assert view.retrains == []


def test_retrain_is_off_without_a_configured_token(view: FakeView, events: EventStore) -> None:
    with TestClient(create_api(view, events, retrain_token="")) as c:
        response = c.post("/api/v1/models/retrain", headers={"Authorization": "Bearer "})
    assert response.status_code == 403 and "no api_token" in response.json()["detail"]


def test_health(client: TestClient, view: FakeView) -> None:
    assert client.get("/health").json() == {"status": "ok", "reason": "ok"}
    view.healthy = (False, "Prometheus at http://127.0.0.1:9090 is unreachable")
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": view.healthy[1]}


def test_before_the_service_starts_routes_answer_503() -> None:
    with TestClient(create_api(None, None, retrain_token=TOKEN)) as c:
        assert c.get("/health").status_code == 503
        assert "not running" in c.get("/api/v1/anomalies").json()["detail"]
        assert c.get("/api/v1/anomalies/history").status_code == 503


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/anomalies",
        "/api/v1/anomalies/history",
        "/api/v1/signals",
        "/api/v1/signals/{name}",
        "/api/v1/models",
        "/api/v1/models/retrain",
        "/health",
    } <= set(paths)
    assert client.get("/docs").status_code == 200


# -- schemathesis: generated requests from the OpenAPI schema never get a 5xx ----------------
# The schema is loaded when the module is collected (schemathesis' lazy fixture loader does not
# work with pytest 9); the app's history store is set per test by ``_schema_events``.
_SCHEMA_APP = create_api(FakeView(), None, retrain_token=TOKEN)
schema = schemathesis.openapi.from_asgi("/openapi.json", _SCHEMA_APP)


@pytest.fixture
def _schema_events(events: EventStore):
    _SCHEMA_APP.state.events = events
    yield
    _SCHEMA_APP.state.events = None


@pytest.mark.usefixtures("_schema_events")
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_requests_never_fail_on_the_server(case) -> None:
    # With the right token, so generated bodies get past authentication to validation.
    case.call_and_validate(
        headers=AUTH,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_signals_are_paged_over_their_series(client: TestClient) -> None:
    body = client.get("/api/v1/signals", params={"limit": 1, "offset": 1}).json()
    assert body["series_total"] == 3 and (body["limit"], body["offset"]) == (1, 1)
    latency = body["data"][0]
    assert [s["labels"] for s in latency["series"]] == [{"model": "llama"}]
    assert [len(s["series"]) for s in body["data"]] == [1, 0, 0]
    assert client.get("/api/v1/signals", params={"limit": 0}).status_code == 422
