"""``llmwatch demo``: the whole stack on one machine, a fault, and the alert it raises.

The timeline: bring the stack up (:func:`bring_up`: serving app, load generator, Alertmanager and
the webhook receiver, Prometheus; a calibration of the live signals; history seeded into
Prometheus; the detector, once it has fitted its models), let the detector score clean live data
for a warm-up, inject the fault through the serving app's admin API, and report as it happens
what the detector finds (REST ``/api/v1/anomalies``), what Prometheus fires and what reaches the
webhook, until the duration is over or the user presses Ctrl-C. Every child process is stopped
on the way out, whatever ended the run.

Messages go to a ``say`` callback (the command line prints them); nothing here prints.
"""

from __future__ import annotations

import math
import queue
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from demo.launch import StackLauncher, StackOptions
from demo.seed import SeedReport, calibrate_and_seed
from demo.stackfile import describe_stack, write_stack_file
from demo.supervisor import Supervisor, terminate_on_signals
from demo.webhook import ReceivedAlert

__all__ = [
    "FAULT_SIGNALS",
    "DemoPlan",
    "DemoResult",
    "bring_up",
    "describe_alert",
    "describe_fault",
    "run_demo",
]

Say = Callable[[str], None]
_POLL_S = 2.0
_LATENCY = ("latency_p95_seconds", "latency_p99_seconds", "ttft_p95_seconds")
# The signals each kind of fault moves, the one to graph first.
FAULT_SIGNALS: dict[str, tuple[str, ...]] = {
    "latency": _LATENCY,
    "slow_tokens": _LATENCY,
    "stall": _LATENCY,
    "errors": ("error_ratio",),
    "corrupt_json": ("json_error_ratio",),
    "memory": ("gpu_memory_used_mb",),
}


@dataclass(frozen=True, kw_only=True)
class DemoPlan:
    """What happens once the stack is up.

    ``fault`` is a body of ``POST /admin/faults``; a latency fault without ``intensity`` adds
    the larger of 8 s and twice the measured P95 latency (so that P99 crosses the 10 s
    threshold of ``HighInferenceLatency`` too).
    """

    duration_s: float = 720.0
    warmup_s: float = 60.0
    fault: dict[str, Any] = field(
        default_factory=lambda: {"kind": "latency", "duration": 180.0, "note": "demo"}
    )


@dataclass
class DemoResult:
    """Times (unix seconds; NaN: did not happen) and what arrived."""

    started: float
    ready: float = math.nan
    fault_start: float = math.nan
    fault_end: float = math.nan
    first_detection: float = math.nan
    first_alert: float = math.nan  # first anomaly alert at the webhook after the fault
    alerts: list[ReceivedAlert] = field(default_factory=list)
    interrupted: bool = False


def describe_fault(spec: dict[str, Any]) -> str:
    """One line about a fault body, e.g. ``latency +6 s before the first token, for 180 s``."""
    kind, intensity = spec["kind"], spec.get("intensity", 1.0)
    what = {
        "latency": f"latency +{intensity:g} s before the first token",
        "slow_tokens": f"slow tokens, +{intensity:g} s per token",
        "errors": f"errors: {intensity:.0%} of requests fail",
        "corrupt_json": f"corrupt JSON: {intensity:.0%} of JSON answers broken",
        "memory": f"memory growth to {intensity:g} MiB",
        "stall": "stall: no token delivered",
    }.get(kind, kind)
    duration = spec.get("duration")
    return what + (f", for {duration:g} s" if duration else ", until stopped")


def describe_alert(alert: ReceivedAlert) -> str:
    """One line about an alert the webhook received."""
    labels = alert.labels
    keys = ("signal", "severity", "kind", "device")
    detail = ", ".join(f"{k}={labels[k]}" for k in keys if k in labels)
    text = alert.annotations.get("description") or alert.annotations.get("summary", "")
    text = " ".join(text.split())
    line = f"{alert.status.upper()} {alert.name} ({detail}) via {alert.receiver}"
    return f"{line}: {text}" if text and alert.status == "firing" else line


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def _describe_anomaly(item: dict[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(item["labels"].items()))
    name = item["signal"] + (f"{{{labels}}}" if labels else "")
    return (
        f"{name} anomalous, score {item['score']:.3f}: actual {_num(item['actual'])}, "
        f"expected {_num(item['expected'])} (band {_num(item['lower'])} to "
        f"{_num(item['upper'])}), by {', '.join(item['detectors']) or 'seasonal'}"
    )


def bring_up(
    stack: StackLauncher,
    say: Say,
    *,
    started_at: float | None = None,
    stops_at: float | None = None,
) -> SeedReport:
    """Start every component, calibrate, seed the history and start the detector; then write
    ``stack.json`` (:mod:`demo.stackfile`; ``started_at`` default now, ``stops_at`` none)."""
    started_at = time.time() if started_at is None else started_at
    opts = stack.options
    stack.prepare()
    say(f"state in {stack.state} (logs in {stack.supervisor.log_dir})")
    began = time.monotonic()
    waiting = "loading the model, may take minutes" if opts.engine == "vllm" else "starting"
    say(f"serving     {opts.engine} engine: {waiting} ...")
    stack.start_serving()
    say(f"serving     {stack.url('serving')}/v1 ready after {time.monotonic() - began:.0f} s")
    stack.start_load()
    since = time.time()
    say(
        f"load        {opts.rate:g} requests/s now, on a daily curve peaking at "
        f"{stack.peak_rate(since):.3g}/s at 16:00 UTC (llmwatch loadgen)"
    )
    stack.start_alerting()
    say(f"webhook     {stack.url('webhook')} (log {stack.webhook.log_path})")
    say(f"alertmanager {stack.url('alertmanager')}")
    stack.start_prometheus(calibration=True)
    say(f"prometheus  {stack.url('prometheus')}")
    say(f"calibrating: measuring the live signals for {opts.calibration_s:g} s ...")
    seed = calibrate_and_seed(stack, since)
    for level in seed.levels:
        say(f"  measured  {level.signal:<26} {level.level:10.4g}  noise {level.sigma:.3g}")
    say(
        f"history     {opts.history_days:g} days at {opts.step:g} s, {seed.series} series, "
        f"{seed.points:,} points written as TSDB blocks with promtool; Prometheus restarted "
        f"({seed.seconds:.0f} s)"
    )
    say("detector    fitting a model per signal on the history ...")
    stack.start_detector()
    say(f"detector    {stack.url('detector')}/docs ready, models fitted")
    info = describe_stack(stack, started_at=started_at, stops_at=stops_at)
    say(f"stack file  {write_stack_file(stack.stack_file, info)} (URLs, config, registry)")
    return seed


class _Watcher:
    """Turns the detector's and Prometheus's state, polled, into lines about what changed."""

    def __init__(self, stack: StackLauncher) -> None:
        self.stack = stack
        self.anomalies: dict[str, dict[str, Any]] = {}
        self.alert_states: dict[tuple[str, ...], str] = {}
        self.scores: dict[str, float] = {}

    def score(self, signal: str) -> str | None:
        """A line when the signal's score moved by a tenth or more since the last one."""
        try:
            series = self.stack.get_json("detector", f"/api/v1/signals/{signal}")["series"]
        except OSError:
            return None
        if not series:
            return None
        top = max(series, key=lambda s: s["score"])
        last = self.scores.get(signal)
        if last is not None and abs(top["score"] - last) < 0.1:
            return None
        self.scores[signal] = top["score"]
        return (
            f"score       {signal} {top['score']:.2f}: actual {_num(top['actual'])}, "
            f"expected {_num(top['expected'])}"
        )

    def poll(self) -> tuple[list[str], list[str]]:
        """Lines about what changed, and the signals newly found anomalous."""
        lines: list[str] = []
        detected: list[str] = []
        try:
            current = self.stack.get_json("detector", "/api/v1/anomalies")["data"]
        except OSError as exc:
            return [f"detector    not answering: {exc}"], detected
        seen = {}
        for item in current:
            key = item["signal"] + repr(sorted(item["labels"].items()))
            seen[key] = item
            if key not in self.anomalies:
                lines.append("DETECTED    " + _describe_anomaly(item))
                detected.append(item["signal"])
        for key, item in self.anomalies.items():
            if key not in seen:
                # Scores mark onsets and re-arm: a shift that lasts is the band alert's.
                lines.append(f"detector    {item['signal']} no longer anomalous (event closed)")
        self.anomalies = seen
        try:
            alerts = self.stack.get_json("prometheus", "/api/v1/alerts")["data"]["alerts"]
        except OSError:
            return lines, detected
        states = {}
        for alert in alerts:
            labels = alert["labels"]
            key = (labels["alertname"], labels.get("signal", ""), labels.get("severity", ""))
            states[key] = alert["state"]
            if self.alert_states.get(key) != alert["state"]:
                lines.append(f"prometheus  {alert['state']:<8} {_key_text(key)}")
        for key in self.alert_states.keys() - states.keys():
            lines.append(f"prometheus  inactive {_key_text(key)}")
        self.alert_states = states
        return lines, detected


def _key_text(key: tuple[str, ...]) -> str:
    name, signal, severity = key
    return name + (f" {{signal={signal}}}" if signal else "") + f" [{severity}]"


def _graph_url(stack: StackLauncher, signal: str) -> str:
    queries = [f"llmwatch:{signal}", f'llmwatch_expected_upper{{signal="{signal}"}}']
    params = {}
    for i, expr in enumerate(queries):
        params[f"g{i}.expr"] = expr
        params[f"g{i}.tab"] = "0"
        params[f"g{i}.range_input"] = "1h"
    return f"{stack.url('prometheus')}/graph?{urllib.parse.urlencode(params)}"


def run_demo(options: StackOptions, plan: DemoPlan, say: Say) -> DemoResult:
    """Run the demo until ``plan.duration_s`` has passed or Ctrl-C; every child is stopped."""
    result = DemoResult(started=time.time())
    arrived: queue.Queue[ReceivedAlert] = queue.Queue()
    with Supervisor(options.state_dir) as sup, terminate_on_signals():
        stack = StackLauncher(options, sup, on_alert=arrived.put)
        try:
            _timeline(stack, plan, say, result, arrived)
        except KeyboardInterrupt:
            result.interrupted = True
            say("interrupted: stopping every component ...")
        finally:
            stack.close()
    return result


def _timeline(
    stack: StackLauncher,
    plan: DemoPlan,
    say: Say,
    result: DemoResult,
    arrived: queue.Queue[ReceivedAlert],
) -> None:
    seed = bring_up(
        stack, say, started_at=result.started, stops_at=result.started + plan.duration_s
    )
    result.ready = time.time()
    fault = _fault_body(plan, seed)
    signals = FAULT_SIGNALS[fault["kind"]]
    deadline = result.started + plan.duration_s
    fault_at = result.ready + plan.warmup_s
    say(
        f"watching    the detector scores live data; fault in {plan.warmup_s:g} s: "
        f"{describe_fault(fault)}"
    )
    say(f"  anomalies {stack.url('detector')}/api/v1/anomalies")
    say(f"  alerts    {stack.url('prometheus')}/alerts and {stack.url('alertmanager')}")
    watcher = _Watcher(stack)
    ended = False
    while time.time() < deadline:
        stack.supervisor.check()
        now = time.time()
        if math.isnan(result.fault_start) and now >= fault_at:
            _inject(stack, fault, now, result, say)
        if not ended and result.fault_end <= now:
            say("fault       over: the signals return to normal, the alerts resolve")
            ended = True
        during = not math.isnan(result.fault_start) and not ended
        _report_detector(watcher, signals, result, say, during_fault=during)
        _report_webhook(arrived, signals, result, say)
        time.sleep(max(0.0, min(_POLL_S, deadline - time.time())))
    say(f"done: the {plan.duration_s:g} s are over; stopping every component ...")


def _fault_body(plan: DemoPlan, seed: SeedReport) -> dict[str, Any]:
    """The fault to inject; a latency fault's intensity from the measured P95 if not given."""
    fault = dict(plan.fault)
    if fault["kind"] == "latency" and "intensity" not in fault:
        p95 = [lv.level for lv in seed.levels if lv.signal == "latency_p95_seconds"]
        fault["intensity"] = round(max(8.0, 2.0 * max(p95, default=0.0)), 1)
    return fault


def _inject(
    stack: StackLauncher, fault: dict[str, Any], now: float, result: DemoResult, say: Say
) -> None:
    injected = stack.inject_fault(fault)
    result.fault_start = now
    result.fault_end = now + float(fault.get("duration") or math.inf)
    say(f"FAULT       {describe_fault(fault)} (fault {injected['id']}, POST /admin/faults)")
    say(f"  graph     {_graph_url(stack, FAULT_SIGNALS[fault['kind']][0])}")


def _report_detector(
    watcher: _Watcher,
    signals: tuple[str, ...],
    result: DemoResult,
    say: Say,
    *,
    during_fault: bool,
) -> None:
    """What changed at the detector and in Prometheus; the first detection of the fault."""
    lines, detected = watcher.poll()
    if during_fault:
        # The detector's score of the signal the fault moves first, as it rises.
        lines.insert(0, watcher.score(signals[0]) or "")
    for line in filter(None, lines):
        say(line)
    after_fault = not math.isnan(result.fault_start)
    if set(detected) & set(signals) and after_fault and math.isnan(result.first_detection):
        result.first_detection = time.time()
        delay = result.first_detection - result.fault_start
        say(f"  first detection of the fault {delay:.0f} s after it began")


def _report_webhook(
    arrived: queue.Queue[ReceivedAlert],
    signals: tuple[str, ...],
    result: DemoResult,
    say: Say,
) -> None:
    """The alerts the webhook received since the last call; the first about the fault."""
    while not arrived.empty():
        alert = arrived.get()
        result.alerts.append(alert)
        say("WEBHOOK     " + describe_alert(alert))
        related = alert.labels.get("signal") in signals
        is_anomaly = alert.labels.get("kind") == "anomaly" and alert.status == "firing"
        after_fault = not math.isnan(result.fault_start)
        if is_anomaly and related and after_fault and math.isnan(result.first_alert):
            result.first_alert = alert.received_at
            say(
                f"first anomaly alert {alert.received_at - result.fault_start:.0f} s after "
                f"the fault, {alert.received_at - result.started:.0f} s after the start"
            )
