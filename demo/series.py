"""The series the stack relies on, and the signals the recording rules define.

Queries in the rules and the dashboard may use only these names: the serving metrics contract
(DESIGN.md section 3, default prefix ``qwen``), vLLM's engine metrics that the rules read (exported
by vLLM itself, and by the synthetic engine under the same names), the detector's exported
metrics (section 5), the recording rules of ``configs/rules/recording.yml`` and what Prometheus
itself writes. The end-to-end test can check the same list against a live stack.
"""

from __future__ import annotations

from pathlib import Path

from demo.yamlio import load_yaml
from serving.engines.engine_metrics import VLLM_SERIES

__all__ = [
    "DETECTOR_SERIES",
    "PROMETHEUS_SERIES",
    "SIGNAL_PREFIX",
    "SIGNAL_VALUE",
    "VLLM_SERIES",
    "known_series",
    "recorded_signals",
    "recording_rule_names",
    "serving_series",
]

SIGNAL_PREFIX = "llmwatch:"
# Every signal again under one name with a `signal` label (what the band alerts compare).
SIGNAL_VALUE = "llmwatch:signal_value"

_SERVING_COUNTERS = ("requests_total", "output_finish_total")
_SERVING_HISTOGRAMS = (
    "inference_duration_seconds",
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "output_tokens",
    "prompt_tokens",
)
_SERVING_GAUGES = (
    "requests_in_flight",
    "gpu_memory_used_mb",
    "gpu_memory_total_mb",
    "fault_active",
)

DETECTOR_SERIES: frozenset[str] = frozenset(
    f"llmwatch_{name}"
    for name in (
        "anomaly_score",
        "expected_value",
        "expected_lower",
        "expected_upper",
        "anomalous",
        "event_peak_score",
        "model_info",
        "model_age_seconds",
        "last_run_timestamp_seconds",
        "run_duration_seconds",
        "query_errors_total",
        "cycle_errors_total",
        "invalid_points_total",
        "series_refused",
        "up",
    )
)
# Written by Prometheus itself: scrape health and the state of alerting rules.
PROMETHEUS_SERIES: frozenset[str] = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def serving_series(prefix: str = "qwen") -> frozenset[str]:
    """Names the serving app exports under ``prefix`` (histograms as their three series)."""
    names = [f"{prefix}_{name}" for name in _SERVING_COUNTERS + _SERVING_GAUGES]
    for name in _SERVING_HISTOGRAMS:
        names += [f"{prefix}_{name}_{part}" for part in ("bucket", "sum", "count")]
    return frozenset(names)


def recording_rule_names(path: Path) -> list[str]:
    """Names recorded by a rule file, each once, in file order."""
    names: list[str] = []
    for group in load_yaml(path).get("groups", []):
        for rule in group.get("rules", []):
            if "record" in rule and rule["record"] not in names:
                names.append(rule["record"])
    return names


def recorded_signals(path: Path) -> list[str]:
    """Signal names (``llmwatch:<signal>`` without the prefix) of a recording rule file, in order.

    These are also the ``signal`` label values the detector and the alerts use.
    """
    return [
        name.removeprefix(SIGNAL_PREFIX)
        for name in recording_rule_names(path)
        if name.startswith(SIGNAL_PREFIX) and name != SIGNAL_VALUE
    ]


def known_series(recording_rules: Path, prefix: str = "qwen") -> frozenset[str]:
    """Every series name the stack produces: serving, vLLM, detector, recording rules and
    Prometheus."""
    recorded = frozenset(recording_rule_names(recording_rules))
    return serving_series(prefix) | VLLM_SERIES | DETECTOR_SERIES | PROMETHEUS_SERIES | recorded
