"""End to end: the demo's stack, for real, from an injected fault to the alert at the webhook.

The stack is what ``llmwatch demo`` runs (:func:`demo.demo.bring_up`): the serving app
on the synthetic engine, the load generator, Prometheus seeded with history measured from the live
traffic, Alertmanager, the webhook receiver and the detector, all real processes on free loopback
ports. Intervals are short (1 s scrapes, a 10 s detector step) and every alert wait is divided by
20, so the whole module runs in about four minutes.

The tests run in file order on one stack: each leaves it as it found it (faults over, alerts
resolved, Prometheus up).
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from support.stack import PROMTOOL, need

from demo.demo import bring_up
from demo.launch import ALERTMANAGER, PROMETHEUS, StackLauncher, StackOptions
from demo.stackfile import read_stack_file, stack_is_running
from demo.supervisor import Supervisor, http_status
from demo.webhook import ReceivedAlert

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# One alert wait in 20: `for: 2m` is 6 s, keep_firing_for 10m is 30 s, group_wait 30s is 1.5 s.
TIME_SCALE = 0.05
LATENCY_S = 12.0  # added before the first token: P99 well above the 10 s threshold
FAULT_S = 20.0
JSON_FAULT_S = 30.0
OUTAGE_S = 12.0
_log = logging.getLogger(__name__)


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() < began + timeout:
        result = check()
        if result:
            _log.info("%s after %.1f s", what, time.monotonic() - began)
            return result
        time.sleep(0.5)
    pytest.fail(f"not within {timeout:g} s: {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackLauncher]:
    """The running stack, brought up as the demo does; everything is stopped afterwards."""
    for binary in (PROMETHEUS, ALERTMANAGER, PROMTOOL):
        need(binary)
    options = StackOptions(
        engine="synthetic",
        state_dir=tmp_path_factory.mktemp("e2e"),
        ports={},  # free ports, whatever else runs on this machine
        scrape_interval="1s",
        time_scale=TIME_SCALE,
        step=10.0,
        detector_interval=2.0,
        history_days=2.1,
        calibration_s=25.0,
        rate=5.0,
        load_duration_s=900.0,
    )
    with Supervisor(options.state_dir) as supervisor:
        launcher = StackLauncher(options, supervisor)
        try:
            bring_up(launcher, _log.info)
            yield launcher
        finally:
            launcher.close()
    for child in supervisor.children:
        assert not child.running, f"{child.spec.name} still runs"
    assert not launcher.stack_file.exists(), "stack.json outlived the stack"


def score(stack: StackLauncher, signal: str) -> float:
    """The detector's latest anomaly score of a signal (REST ``/api/v1/signals``)."""
    data = stack.get_json("detector", f"/api/v1/signals/{signal}")
    return max((s["score"] for s in data["series"]), default=0.0)


def received(stack: StackLauncher, since: float, **labels: str) -> list[ReceivedAlert]:
    """Alerts at the webhook since ``since`` whose labels include ``labels``."""
    return [
        a
        for a in stack.alerts_received()
        if a.received_at >= since and all(a.labels.get(k) == v for k, v in labels.items())
    ]


def firing_in_prometheus(stack: StackLauncher, alertname: str) -> list[dict]:
    """Pending or firing alerts called ``alertname`` in Prometheus (before any inhibition)."""
    alerts = stack.get_json("prometheus", "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname]


def notified(
    stack: StackLauncher, since: float, *, status: str, timeout: float, **labels: str
) -> ReceivedAlert:
    """Wait for a ``status`` (firing, resolved) notification of an alert with ``labels``."""
    found = wait_until(
        lambda: [a for a in received(stack, since, **labels) if a.status == status],
        timeout,
        f"a {status} notification with {labels} at the webhook",
    )
    return found[0]  # type: ignore[index]


def _delivered_or_inhibited(
    stack: StackLauncher, since: float, labels: dict[str, str]
) -> tuple[dict, dict] | None:
    """The alert as delivered to the webhook, or as Alertmanager holds it, inhibited by a
    threshold alert on the same signal."""
    for alert in received(stack, since, **labels):
        if alert.status == "firing":
            as_sent = {"labels": alert.labels, "receivers": [{"name": alert.receiver}]}
            return as_sent, {}
    held = stack.get_json("alertmanager", "/api/v2/alerts")
    by_fingerprint = {a["fingerprint"]: a["labels"] for a in held}
    for alert in held:
        if any(alert["labels"].get(k) != v for k, v in labels.items()):
            continue
        inhibitors = [by_fingerprint.get(f, {}) for f in alert["status"]["inhibitedBy"]]
        if any(
            i.get("kind") == "threshold" and i.get("signal") == labels["signal"] for i in inhibitors
        ):
            return {}, alert
    return None


def _latency_regression(
    stack: StackLauncher, before: float
) -> tuple[float, ReceivedAlert, ReceivedAlert]:
    """Inject a latency fault, check its anomaly and threshold alerts, wait for its end.

    ``before`` is the latency score before any fault. Returns the fault's start and the two
    alerts as delivered.
    """
    detector = stack.addresses.detector
    # A latency regression: every request waits LATENCY_S before its first token.
    start = time.time()
    stack.inject_fault({"kind": "latency", "intensity": LATENCY_S, "duration": FAULT_S})
    wait_until(lambda: score(stack, "latency_p95_seconds") >= 0.99, 90, "latency score rises")
    assert before < 0.95
    anomaly = notified(
        stack,
        start,
        status="firing",
        timeout=90,
        alertname="LLMSignalAnomalous",
        signal="latency_p95_seconds",
    )
    assert anomaly.labels["kind"] == "anomaly"
    assert anomaly.labels["severity"] == "warning"
    assert anomaly.labels["instance"] == detector
    assert anomaly.labels["job"] == "llmwatch-detector"
    assert anomaly.receiver == "webhook-warning"
    assert "expected" in anomaly.annotations["description"]
    assert anomaly.annotations["anomalies_url"] == f"http://{detector}/api/v1/anomalies"
    static = notified(
        stack,
        start,
        status="firing",
        timeout=90,
        alertname="HighInferenceLatency",
        severity="critical",
    )
    assert static.labels["signal"] == "latency_p99_seconds"
    assert static.labels["kind"] == "threshold"
    assert static.receiver == "webhook-critical"
    wait_until(lambda: time.time() > start + FAULT_S, FAULT_S, "the latency fault ends")
    return start, anomaly, static


_JSON_ANOMALY = {"alertname": "LLMSignalAnomalous", "signal": "json_error_ratio"}


def _json_burst(stack: StackLauncher, before: float) -> tuple[float, dict, ReceivedAlert]:
    """Inject a burst of broken JSON answers and check its anomaly and threshold alerts.

    ``before`` is the JSON error score before any fault. Returns the burst's start, the anomaly
    alert as delivered (empty when Alertmanager inhibited it) and the threshold alert.
    """
    # A third of the traffic asks for JSON. The recording rule's 1m window turns the burst into a
    # ramp: the detector must catch the ramp.
    json_start = time.time()
    stack.inject_fault({"kind": "corrupt_json", "intensity": 1.0, "duration": JSON_FAULT_S})
    wait_until(lambda: score(stack, "json_error_ratio") >= 0.95, 90, "JSON error score rises")
    assert before < 0.95
    # The anomaly alert reaches Alertmanager and is delivered, unless the threshold alert on the
    # same signal fires first: then Alertmanager inhibits it (configs/alertmanager.yml). Alert
    # waits are divided by 20 here and the detector's step is not, so either may come first.
    delivered, inhibited = wait_until(
        lambda: _delivered_or_inhibited(stack, json_start, _JSON_ANOMALY),
        90,
        "the JSON anomaly alert delivered, or inhibited by the threshold alert",
    )
    json_anomaly = delivered or inhibited
    # Critical (a page) from a score of 0.99 on an error ratio, warning below (rules/anomaly.yml).
    severity = json_anomaly["labels"]["severity"]
    assert severity in ("critical", "warning")
    assert json_anomaly["receivers"] == [{"name": f"webhook-{severity}"}]
    assert json_anomaly["labels"]["kind"] == "anomaly"
    assert json_anomaly["labels"]["instance"] == stack.addresses.detector
    json_static = notified(
        stack,
        json_start,
        status="firing",
        timeout=90,
        alertname="JSONFormatErrorRateHigh",
        severity="critical",
    )
    assert json_static.labels["signal"] == "json_error_ratio"
    return json_start, delivered, json_static


def test_the_stack_file_names_the_running_stack(stack: StackLauncher) -> None:
    info = read_stack_file(stack.stack_file)
    assert info is not None and stack_is_running(info)
    assert (info.api_url, info.prometheus_url) == (stack.url("detector"), stack.url("prometheus"))
    # The registry the detector reports is the one the file tells the notebooks to publish to.
    assert stack.get_json("detector", "/api/v1/models")["registry_root"] == info.registry_root


def test_latency_regression_and_json_burst_raise_alerts_that_resolve(
    stack: StackLauncher,
) -> None:
    before = {s: score(stack, s) for s in ("latency_p95_seconds", "json_error_ratio")}
    start, anomaly, static = _latency_regression(stack, before["latency_p95_seconds"])
    json_start, delivered, json_static = _json_burst(stack, before["json_error_ratio"])

    # Once the faults are over every one of them resolves.
    for alert in (anomaly, static, json_static):
        labels = {k: alert.labels[k] for k in ("alertname", "signal", "severity")}
        notified(stack, start, status="resolved", timeout=150, **labels)
    if delivered:
        notified(stack, json_start, status="resolved", timeout=150, **_JSON_ANOMALY)
    wait_until(
        lambda: not firing_in_prometheus(stack, "LLMSignalAnomalous"),
        150,
        "every anomaly alert resolved in Prometheus",
    )


def test_prometheus_outage_marks_the_detector_stale_and_raises_no_anomaly(
    stack: StackLauncher,
) -> None:
    wait_until(
        lambda: not firing_in_prometheus(stack, "LLMSignalAnomalous"),
        120,
        "no anomaly alert left from before",
    )
    prometheus = stack.supervisor.get("prometheus")
    prometheus.kill()
    outage = time.time()
    health = stack.url("detector") + "/health"
    wait_until(lambda: http_status(health) == 503, 30, "the detector reports itself unhealthy")
    wait_until(lambda: _llmwatch_up(stack) == 0.0, 30, "llmwatch_up drops to 0")
    time.sleep(max(0.0, outage + OUTAGE_S - time.time()))

    stack.start_prometheus()
    wait_until(lambda: http_status(health) == 200, 90, "the detector recovers")
    assert _llmwatch_up(stack) == 1.0
    # The detector scores the rows of the gap when it is back; none of them is an anomaly.
    recovered = time.time()
    while time.time() < recovered + 10.0:
        raised = firing_in_prometheus(stack, "LLMSignalAnomalous")
        assert not raised, [(a["labels"], a["annotations"]["description"]) for a in raised]
        anomalies = stack.get_json("detector", "/api/v1/anomalies")
        assert anomalies["count"] == 0, anomalies["data"]
        time.sleep(1.0)
    after = received(stack, outage, alertname="LLMSignalAnomalous")
    assert [a for a in after if a.status == "firing"] == []


def _llmwatch_up(stack: StackLauncher) -> float | None:
    """``llmwatch_up`` on the detector's own /metrics (Prometheus may be the thing down)."""
    with urllib.request.urlopen(stack.url("detector") + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("llmwatch_up "):
            return float(line.split()[1])
    return None
