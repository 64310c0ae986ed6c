"""The Grafana dashboard of the stack, generated from the recording rules.

One panel per signal recorded in ``configs/rules/recording.yml`` (actual value, the detector's
expected value and band, its anomaly score), so a signal added there appears here when the
dashboard is regenerated (``llmwatch stack dashboard``); a test checks that the committed
``configs/grafana/llmwatch.json`` is what this module generates.

>>> board = build_dashboard(["requests_per_second"])
>>> [p["title"] for p in board["panels"] if p["type"] == "row"][:2]
['Serving', 'Signals: actual, expected band and anomaly score']
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from demo.render import default_configs_dir
from demo.series import SIGNAL_PREFIX, recorded_signals

__all__ = [
    "DASHBOARD_UID",
    "SIGNAL_DISPLAY",
    "SignalDisplay",
    "build_dashboard",
    "dashboard_json",
    "dashboard_queries",
    "default_dashboard_path",
]

DASHBOARD_UID = "llmwatch-overview"
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH, _HEIGHT = 12, 8


class SignalDisplay(NamedTuple):
    """How a signal is shown: panel title, Grafana unit, legend of the actual value."""

    title: str
    unit: str
    legend: str = "actual"


SIGNAL_DISPLAY: dict[str, SignalDisplay] = {
    "latency_p95_seconds": SignalDisplay("Latency P95", "s"),
    "latency_p99_seconds": SignalDisplay("Latency P99", "s"),
    "ttft_p95_seconds": SignalDisplay("Time to first token P95", "s"),
    "requests_per_second": SignalDisplay("Requests per second", "reqps"),
    "error_ratio": SignalDisplay("Error ratio (error, timeout)", "percentunit"),
    "json_error_ratio": SignalDisplay("Invalid JSON ratio", "percentunit"),
    "gpu_memory_used_mb": SignalDisplay("GPU memory used", "decmbytes", "actual GPU {{device}}"),
    "output_tokens_per_request": SignalDisplay("Output tokens per request", "none"),
    "kv_cache_usage_ratio": SignalDisplay("vLLM KV-cache usage (fullest engine)", "percentunit"),
    "requests_waiting": SignalDisplay("vLLM requests waiting", "none"),
    "requests_running": SignalDisplay("vLLM requests running", "none"),
    "queue_time_p95_seconds": SignalDisplay("vLLM queue time P95", "s"),
    "preemptions_per_second": SignalDisplay("vLLM preemptions per second", "ops"),
    "inter_token_latency_p95_seconds": SignalDisplay("vLLM inter-token latency P95", "s"),
    "prefill_time_p95_seconds": SignalDisplay("vLLM prefill time P95", "s"),
    "decode_time_p95_seconds": SignalDisplay("vLLM decode time P95", "s"),
    "prompt_tokens_per_request": SignalDisplay("Prompt tokens per request (vLLM)", "none"),
}


def default_dashboard_path() -> Path:
    """Where the committed dashboard lives: ``configs/grafana/llmwatch.json``."""
    return default_configs_dir() / "grafana" / "llmwatch.json"


def _target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": _DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def _thresholds(*steps: tuple[float, str]) -> dict[str, Any]:
    """Threshold steps drawn as lines; the base step is transparent."""
    base = [{"color": "transparent", "value": None}]
    return {"mode": "absolute", "steps": base + [{"color": c, "value": v} for v, c in steps]}


def _timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    description: str = "",
    thresholds: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 0, "spanNulls": False}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line"}
        defaults["thresholds"] = thresholds
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": _DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def _override(kind: str, name: str, **props: Any) -> dict[str, Any]:
    properties = [{"id": key.replace("__", "."), "value": value} for key, value in props.items()]
    return {"matcher": {"id": kind, "options": name}, "properties": properties}


def _fixed(color: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": color}


def _serving_panels() -> list[dict[str, Any]]:
    """The seed's four panels, plus error ratios and the injected faults."""
    return [*_serving_timeseries(), _output_tokens_heatmap(), _faults_timeline()]


def _serving_timeseries() -> list[dict[str, Any]]:
    """GPU memory, latency, request rate and error ratios, each with its alarm thresholds."""
    return [
        _timeseries(
            "GPU memory",
            [
                _target("llmwatch:gpu_memory_used_mb", "used GPU {{device}}", "A"),
                _target("max by (device) (qwen_gpu_memory_total_mb)", "total GPU {{device}}", "B"),
            ],
            "decmbytes",
            description="Used and total memory per GPU (NVML); absent without a GPU.",
            thresholds=_thresholds((20_000, "orange"), (22_000, "red")),
        ),
        _timeseries(
            "Latency P95 / P99",
            [
                _target("llmwatch:latency_p95_seconds", "P95", "A"),
                _target("llmwatch:latency_p99_seconds", "P99", "B"),
                _target("llmwatch:ttft_p95_seconds", "time to first token P95", "C"),
            ],
            "s",
            description="End-to-end latency quantiles over 1 minute. SLO: P99 under 5 s.",
            thresholds=_thresholds((5, "yellow"), (8, "orange"), (10, "red")),
        ),
        _timeseries(
            "Request rate by status",
            [
                _target(
                    "sum by (status) (rate(qwen_requests_total[$__rate_interval]))",
                    "{{status}}",
                    "A",
                ),
                _target("llmwatch:requests_per_second", "total (1m)", "B"),
            ],
            "reqps",
            description="Requests per second by outcome. Planned range 15-20/s.",
            thresholds=_thresholds((10, "orange"), (25, "red")),
        ),
        _timeseries(
            "Error ratios",
            [
                _target("llmwatch:error_ratio", "failed (error, timeout)", "A"),
                _target("llmwatch:json_error_ratio", "invalid JSON", "B"),
            ],
            "percentunit",
            description="Shares of all requests; absent without traffic.",
            thresholds=_thresholds((0.05, "orange"), (0.10, "red")),
        ),
    ]


def _output_tokens_heatmap() -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": "Output tokens per request (distribution)",
        "description": "How many requests ended with how many output tokens.",
        "datasource": _DATASOURCE,
        "targets": [
            _target(
                "sum by (le) (increase(qwen_output_tokens_bucket[$__rate_interval]))",
                "{{le}}",
                "A",
                format="heatmap",
            )
        ],
        "options": {
            "calculate": False,
            "yAxis": {"unit": "none"},
            "color": {"mode": "scheme", "scheme": "Oranges"},
            "cellGap": 1,
        },
        "fieldConfig": {"defaults": {}, "overrides": []},
    }


def _faults_timeline() -> dict[str, Any]:
    return {
        "type": "state-timeline",
        "title": "Injected faults",
        "description": "1 while a fault injected by the serving layer runs.",
        "datasource": _DATASOURCE,
        "targets": [_target("max by (kind) (qwen_fault_active)", "{{kind}}", "A")],
        "options": {"showValue": "never"},
        "fieldConfig": {"defaults": {"min": 0, "max": 1}, "overrides": []},
    }


def _signal_panel(signal: str) -> dict[str, Any]:
    """Actual vs the detector's expected value and band, with the anomaly score on the right."""
    try:
        display = SIGNAL_DISPLAY[signal]
    except KeyError:
        raise ValueError(
            f"recorded signal {signal!r} has no entry in SIGNAL_DISPLAY "
            "(demo/dashboard.py): add its title and unit"
        ) from None
    sel = f'{{signal="{signal}"}}'
    targets = [
        _target(f"{SIGNAL_PREFIX}{signal}", display.legend, "A"),
        _target(f"llmwatch_expected_value{sel}", "expected", "B"),
        _target(f"llmwatch_expected_lower{sel}", "band lower", "C"),
        _target(f"llmwatch_expected_upper{sel}", "band upper", "D"),
        _target(f"llmwatch_anomaly_score{sel}", "score {{detector}}", "E"),
    ]
    band = {"custom__lineWidth": 0, "color": _fixed("green")}
    overrides = [
        _override(
            "byName", "band upper", custom__fillBelowTo="band lower", custom__fillOpacity=20, **band
        ),
        _override("byName", "band lower", **band),
        _override(
            "byName",
            "expected",
            custom__lineStyle={"fill": "dash", "dash": [10, 10]},
            color=_fixed("green"),
        ),
        _override(
            "byRegexp",
            "^score",
            custom__axisPlacement="right",
            custom__drawStyle="bars",
            custom__fillOpacity=40,
            min=0,
            max=1,
            unit="none",
            color=_fixed("red"),
        ),
    ]
    return _timeseries(
        display.title,
        targets,
        display.unit,
        description=f"{SIGNAL_PREFIX}{signal}: actual, expected (dashed), band (shaded); "
        "anomaly score per detector on the right axis (0-1).",
        overrides=overrides,
    )


def _alert_panels() -> list[dict[str, Any]]:
    alerts = {
        "type": "table",
        "title": "Active alerts",
        "description": "Alerts firing now (Prometheus' ALERTS series).",
        "datasource": _DATASOURCE,
        "targets": [_target('ALERTS{alertstate="firing"}', "", "A", instant=True, format="table")],
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time": True,
                        "Value": True,
                        "__name__": True,
                        "alertstate": True,
                    }
                },
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
    }
    anomalous = {
        "type": "state-timeline",
        "title": "Anomalous signals",
        "description": "The detector's decision per signal, after hysteresis.",
        "datasource": _DATASOURCE,
        "targets": [_target("llmwatch_anomalous", "{{signal}} {{device}}", "A")],
        "options": {"showValue": "never"},
        "fieldConfig": {"defaults": {"min": 0, "max": 1}, "overrides": []},
    }
    health = _timeseries(
        "Detector health",
        [
            _target("llmwatch_up", "source reachable {{instance}}", "A"),
            _target("time() - llmwatch_last_run_timestamp_seconds", "seconds since last run", "B"),
            _target(
                "sum(rate(llmwatch_query_errors_total[$__rate_interval]))", "query errors/s", "C"
            ),
        ],
        "none",
        description="llmwatch_up 1 when the detector can query Prometheus; stale after 300 s.",
        thresholds=_thresholds((300, "red")),
    )
    return [alerts, anomalous, health]


def _row(title: str, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": _grid(0, y, 24, 1),
    }


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def _place(panels: list[dict[str, Any]], y: int, width: int = _WIDTH) -> int:
    """Lay panels out left to right in rows; return the next free y."""
    per_row = 24 // width
    for i, panel in enumerate(panels):
        panel["gridPos"] = _grid(
            (i % per_row) * width, y + (i // per_row) * _HEIGHT, width, _HEIGHT
        )
    return y + -(-len(panels) // per_row) * _HEIGHT


def build_dashboard(signals: Sequence[str]) -> dict[str, Any]:
    """The dashboard as a dict, with one signal panel per name in ``signals``.

    Raises ``ValueError`` naming a signal without an entry in :data:`SIGNAL_DISPLAY`.
    """
    sections = [
        ("Serving", _serving_panels()),
        ("Signals: actual, expected band and anomaly score", [_signal_panel(s) for s in signals]),
        ("Alerts and detector", _alert_panels()),
    ]
    panels: list[dict[str, Any]] = []
    y = 0
    for title, members in sections:
        panels.append(_row(title, y))
        y = _place(members, y + 1)
        panels.extend(members)
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": DASHBOARD_UID,
        "title": "llmwatch: LLM serving and anomalies",
        "description": "Generated by demo/dashboard.py from configs/rules/recording.yml.",
        "tags": ["llmwatch", "llm", "anomaly-detection"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json(recording_rules: Path | None = None) -> str:
    """The dashboard's JSON text for the signals of a recording rule file (default: the repo's)."""
    path = recording_rules or default_configs_dir() / "rules" / "recording.yml"
    return json.dumps(build_dashboard(recorded_signals(path)), indent=2) + "\n"


def _walk_targets(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield from panel.get("targets", [])
        yield from _walk_targets(panel.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard's panels (collapsed rows included)."""
    return [target["expr"] for target in _walk_targets(dashboard["panels"]) if "expr" in target]
