"""The service's web app (REST API, /metrics, /health) with its real schedule and Prometheus."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.service import STEP, Clock, history, make_service, settings_for

from detector.service.server import create_app

pytestmark = pytest.mark.integration


def _wait(client: TestClient, path: str, status: int, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(path)
        if resp.status_code == status or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_app_serves_metrics_api_and_health_from_the_running_loop(prometheus_factory, tmp_path):
    now = float(np.floor(time.time() / STEP) * STEP)
    prom = prometheus_factory(backfill=history(now - 60))
    settings = settings_for(prom.url, tmp_path, interval=0.5, api_token="t0ken")
    service = make_service(settings, Clock(now))  # its clock stands still; the loop runs
    app = create_app(settings, service=service)
    with TestClient(app) as client:
        # Before the first fit is installed the service says why it is not ready.
        resp = _wait(client, "/health", 200)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "ok"
        text = client.get("/metrics").text
        assert "llmwatch_up 1.0" in text
        assert 'llmwatch_anomaly_score{detector="ensemble",model="a",signal="latency"}' in text
        assert 'llmwatch_model_info{detector="seasonal",signal="errors",version="' in text
        signals = client.get("/api/v1/signals").json()
        assert [s["name"] for s in signals["data"]] == ["latency", "errors"]
        models = client.get("/api/v1/models").json()
        assert {m["signal"]: m["series"] for m in models["data"]} == {"latency": 2, "errors": 1}
        assert models["registry_root"] == str((tmp_path / "models").resolve())
        assert client.get("/api/v1/anomalies").json()["count"] == 0
        assert client.post("/api/v1/models/retrain").status_code == 401
        resp = client.post(
            "/api/v1/models/retrain",
            json={"signal": "errors"},
            headers={"Authorization": "Bearer t0ken"},
        )
        assert resp.status_code == 202 and resp.json()["job_id"]
        assert client.get("/docs").status_code == 200
    # The lifespan stopped the loop and closed the history.
    assert service._thread is None


def test_app_reports_503_with_the_reason_while_prometheus_is_down(tmp_path):
    settings = settings_for("http://127.0.0.1:9", tmp_path, interval=0.5)
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while True:  # the first cycle runs at once; until then the reason is "starting"
            resp = client.get("/health")
            if "unreachable" in resp.json()["reason"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert resp.status_code == 503 and resp.json()["status"] == "unavailable"
        assert "unreachable" in resp.json()["reason"]
        assert "llmwatch_up 0.0" in client.get("/metrics").text


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_off_loopback_binding_needs_an_api_token(tmp_path, host):
    from detector.service.config import ConfigError

    with pytest.raises(ConfigError, match="api_token"):
        settings_for("http://127.0.0.1:9", tmp_path, host=host)
