"""The demo's webhook receiver: what it keeps and logs, what it refuses, and a real Alertmanager."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.stack import ALERTMANAGER, AlertmanagerServer, http_json, need, wait_for

from demo.demo import describe_alert
from demo.render import render_alertmanager_config
from demo.webhook import AlertReceiver, ReceivedAlert

pytestmark = pytest.mark.integration

LIMIT = 4 * 1024 * 1024  # the largest body the receiver reads

PAYLOAD = {
    "version": "4",
    "status": "firing",
    "receiver": "webhook-critical",
    "groupLabels": {"alertname": "HighInferenceLatency"},
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighInferenceLatency",
                "severity": "critical",
                "signal": "latency_p99_seconds",
                "kind": "threshold",
            },
            "annotations": {"description": "The P99 latency is 12s,\n above 10 s."},
            "startsAt": "2026-01-05T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[AlertReceiver, list[ReceivedAlert]]]:
    seen: list[ReceivedAlert] = []
    server = AlertReceiver(log_path=tmp_path / "alerts.jsonl", on_alert=seen.append).start()
    yield server, seen
    server.stop()


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_notification_is_kept_logged_and_handed_on(
    receiver: tuple[AlertReceiver, list[ReceivedAlert]], tmp_path: Path
) -> None:
    server, seen = receiver
    assert post(server.url, json.dumps(PAYLOAD).encode()) == (200, {"received": 1})
    (alert,) = server.alerts()
    assert seen == [alert]
    assert alert.name == "HighInferenceLatency"
    assert (alert.receiver, alert.status) == ("webhook-critical", "firing")
    assert alert.labels["signal"] == "latency_p99_seconds"
    logged = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert logged[0]["labels"] == alert.labels
    assert logged[0]["receiver"] == "webhook-critical"
    assert http_json(server.url)["alerts"][0]["status"] == "firing"
    line = describe_alert(alert)
    assert line.startswith("FIRING HighInferenceLatency (signal=latency_p99_seconds")
    assert line.endswith("via webhook-critical: The P99 latency is 12s, above 10 s.")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "Expecting property name"),
        (b"[]", "must be a JSON object"),
        (b'{"alerts": {}}', "'alerts' must be a list"),
        (b'{"alerts": [{"status": "firing"}]}', "alerts[0] must be an object with a 'labels'"),
    ],
)
def test_a_malformed_notification_is_refused_with_the_reason(
    receiver: tuple[AlertReceiver, list[ReceivedAlert]], body: bytes, reason: str
) -> None:
    server, seen = receiver
    status, answer = post(server.url, body)
    assert status == 400
    assert reason in answer["error"]
    assert server.alerts() == [] and seen == []


def connect(url: str) -> tuple[http.client.HTTPConnection, str]:
    """A kept-alive connection (urllib's ``Connection: close`` would have the refusal reset it)."""
    address = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=5), address.path


def test_a_body_over_4_mib_is_refused_before_it_is_read(
    receiver: tuple[AlertReceiver, list[ReceivedAlert]],
) -> None:
    server, seen = receiver
    # Declared too large: refused from the headers alone. Waiting for "100 Continue" before
    # sending, this client would time out if the receiver went on to read the body.
    conn, path = connect(server.url)
    conn.putrequest("POST", path)
    conn.putheader("Content-Length", str(LIMIT + 1))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "4 MiB" in json.loads(response.read())["error"]
    conn.close()
    # Chunked, with no length declared: refused once what arrived passes the limit.
    conn, path = connect(server.url)
    conn.request("POST", path, body=iter([b" " * 65536] * (LIMIT // 65536 + 1)))
    response = conn.getresponse()
    assert response.status == 413 and "4 MiB" in json.loads(response.read())["error"]
    conn.close()
    assert server.alerts() == [] and seen == []
    # A body of exactly the limit is still read and kept.
    body = json.dumps(PAYLOAD).encode()
    assert post(server.url, body + b" " * (LIMIT - len(body))) == (200, {"received": 1})
    assert len(server.alerts()) == 1 and len(seen) == 1


def test_other_paths_are_not_found(receiver: tuple[AlertReceiver, list[ReceivedAlert]]) -> None:
    server, _ = receiver
    status, answer = post(server.url.replace("/alerts", "/other"), b"{}")
    assert status == 404 and "/alerts" in answer["error"]


def test_alertmanager_delivers_to_it(tmp_path: Path) -> None:
    need(ALERTMANAGER)
    received: list[ReceivedAlert] = []
    hook = AlertReceiver(on_alert=received.append).start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config(hook.url, time_scale=0.05))
    manager = AlertmanagerServer(config=config, workdir=tmp_path).start()
    try:
        now = dt.datetime.now(dt.UTC)
        alert = {
            "labels": {
                "alertname": "LLMSignalAnomalous",
                "severity": "warning",
                "kind": "anomaly",
                "signal": "ttft_p95_seconds",
            },
            "annotations": {"summary": "ttft_p95_seconds is anomalous"},
            "startsAt": now.isoformat(),
            "endsAt": (now + dt.timedelta(minutes=5)).isoformat(),
        }
        http_json(manager.url + "/api/v2/alerts", [alert])
        wait_for(lambda: list(received), bool, timeout=30)
    finally:
        manager.stop()
        hook.stop()
    (got,) = received
    assert got.receiver == "webhook-warning"
    assert got.labels == alert["labels"]
    assert got.annotations["summary"] == "ttft_p95_seconds is anomalous"
    assert got.status == "firing"
