"""Alertmanager routing and inhibition, with amtool and a real Alertmanager posting to a webhook."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack import (
    ALERTMANAGER,
    AMTOOL,
    REPO,
    AlertmanagerServer,
    http_json,
    need,
    run_tool,
    wait_for,
)

from demo.render import render_alertmanager_config
from demo.webhook import AlertReceiver

pytestmark = pytest.mark.integration

CONFIG = REPO / "configs" / "alertmanager.yml"
DETECTOR = {"job": "llmwatch-detector", "instance": "127.0.0.1:9105"}
OTHER_DETECTOR = {"job": "llmwatch-detector", "instance": "127.0.0.1:9106"}


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=HighInferenceLatency"], "webhook-critical"),
        (["severity=warning", "kind=anomaly"], "webhook-warning"),
        (["alertname=Unlabelled"], "webhook-default"),
    ],
)
def test_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run_tool(AMTOOL, "config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _alert(name: str, severity: str, kind: str, **labels: str) -> dict:
    now = dt.datetime.now(dt.UTC)
    return {
        "labels": {"alertname": name, "severity": severity, "kind": kind, **labels},
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + dt.timedelta(minutes=10)).isoformat(),
    }


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


# The alerts a stack could have at one moment, and whether each is inhibited by another one.
P99_CRITICAL = _alert("HighInferenceLatency", "critical", "threshold", signal="latency_p99_seconds")
P99_WARNING = _alert("HighInferenceLatency", "warning", "threshold", signal="latency_p99_seconds")
P99_ANOMALY = _alert(
    "LLMSignalAnomalous", "warning", "anomaly", signal="latency_p99_seconds", **DETECTOR
)
TTFT_ANOMALY = _alert(
    "LLMSignalAnomalous", "warning", "anomaly", signal="ttft_p95_seconds", **DETECTOR
)
GPU0_THRESHOLD = _alert(
    "GPUMemoryHigh", "warning", "threshold", signal="gpu_memory_used_mb", device="0"
)
GPU0_ANOMALY = _alert(
    "LLMSignalAnomalous", "warning", "anomaly", signal="gpu_memory_used_mb", device="0", **DETECTOR
)
GPU1_BAND = _alert(
    "LLMSignalAboveExpectedBand",
    "warning",
    "anomaly",
    signal="gpu_memory_used_mb",
    device="1",
    instance=DETECTOR["instance"],
)
STALE = _alert("LLMWatchDetectorStale", "warning", "health", **OTHER_DETECTOR)
STALE_ANOMALY = _alert(
    "LLMSignalAnomalous", "critical", "anomaly", signal="error_ratio", **OTHER_DETECTOR
)
ACTIVE = [P99_CRITICAL, TTFT_ANOMALY, GPU0_THRESHOLD, GPU1_BAND, STALE]
INHIBITED = [P99_WARNING, P99_ANOMALY, GPU0_ANOMALY, STALE_ANOMALY]


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: AlertReceiver) -> Iterator[AlertmanagerServer]:
    need(ALERTMANAGER)
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_alertmanager_config(webhook.url, time_scale=0.1))
    server = AlertmanagerServer(config=config, workdir=tmp_path).start()
    yield server
    server.stop()


def _notified(webhook: AlertReceiver) -> dict[tuple, set[tuple[str, str]]]:
    """For each alert's labels, the (receiver, status) pairs it was notified with."""
    seen: dict[tuple, set[tuple[str, str]]] = {}
    for alert in webhook.alerts():
        seen.setdefault(_key(alert.labels), set()).add((alert.receiver, alert.status))
    return seen


def test_inhibition_and_routing_in_a_real_alertmanager(
    alertmanager: AlertmanagerServer, webhook: AlertReceiver
) -> None:
    # Alertmanager's inhibitor learns of source alerts asynchronously from its store: in one post,
    # a loaded machine can notify a target before the inhibitor has seen its source. In a stack
    # the sources (thresholds, staleness) have fired by then; post them first here too.
    http_json(alertmanager.url + "/api/v2/alerts", ACTIVE)
    wait_for(
        lambda: http_json(alertmanager.url + "/api/v2/alerts"),
        lambda found: len(found) == len(ACTIVE),
    )
    http_json(alertmanager.url + "/api/v2/alerts", INHIBITED)

    states = wait_for(
        lambda: {
            _key(a["labels"]): a["status"]["state"]
            for a in http_json(alertmanager.url + "/api/v2/alerts")
        },
        lambda found: (
            len(found) == len(ACTIVE + INHIBITED)
            and all(found[_key(a["labels"])] == "suppressed" for a in INHIBITED)
        ),
    )
    assert {_key(a["labels"]): states.get(_key(a["labels"])) for a in ACTIVE} == {
        _key(a["labels"]): "active" for a in ACTIVE
    }
    assert {_key(a["labels"]): states.get(_key(a["labels"])) for a in INHIBITED} == {
        _key(a["labels"]): "suppressed" for a in INHIBITED
    }

    # Every active alert reaches the webhook through the receiver of its severity; no inhibited
    # one does.
    seen = wait_for(lambda: _notified(webhook), lambda s: len(s) >= len(ACTIVE), timeout=30)
    expected = {
        _key(a["labels"]): {(f"webhook-{a['labels']['severity']}", "firing")} for a in ACTIVE
    }
    assert seen == expected

    # The critical latency alert resolves: its warning level is no longer inhibited, and the
    # anomaly on the same signal is still inhibited by that warning threshold alert.
    resolved = dict(P99_CRITICAL, endsAt=dt.datetime.now(dt.UTC).isoformat())
    http_json(alertmanager.url + "/api/v2/alerts", [resolved])
    seen = wait_for(
        lambda: _notified(webhook),
        lambda s: (
            _key(P99_WARNING["labels"]) in s
            and ("webhook-critical", "resolved") in s.get(_key(P99_CRITICAL["labels"]), set())
        ),
        timeout=30,
    )
    assert ("webhook-critical", "resolved") in seen[_key(P99_CRITICAL["labels"])]
    assert seen[_key(P99_WARNING["labels"])] == {("webhook-warning", "firing")}
    assert _key(P99_ANOMALY["labels"]) not in seen
