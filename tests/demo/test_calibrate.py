"""Measuring live levels: the real recording rules on a real Prometheus holding known traffic."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support.servers import PrometheusServer, Series

from demo.calibrate import CalibrationError, measure_levels, recorded_expressions
from demo.render import default_configs_dir

pytestmark = pytest.mark.integration

RULES = default_configs_dir() / "rules" / "recording.yml"
RATES = {"success": 4.0, "error": 0.2, "json_parse_error": 0.3}  # requests/s by status
EDGES = np.arange(0.5, 5.01, 0.5)  # latency buckets; latencies are uniform on [1, 3] s
SPAN = 300  # seconds of traffic


def traffic(end: float, seed: int = 0) -> tuple[list[Series], float]:
    """The serving app's raw series over SPAN seconds up to ``end``, one sample a second."""
    rng = np.random.default_rng(seed)
    t = np.arange(end - SPAN, end + 0.5, 1.0)
    out = []
    counts = {s: rng.poisson(rate, t.size) for s, rate in RATES.items()}
    for status, per_second in counts.items():
        out.append(Series("qwen_requests_total", {"status": status}, t, np.cumsum(per_second)))
    total = sum(counts.values())
    # Every request's latency, uniform on [1, 3] s, into cumulative buckets per second.
    buckets = np.zeros((t.size, EDGES.size + 1))
    for i, n in enumerate(total):
        latency = rng.uniform(1.0, 3.0, n)
        buckets[i, :-1] = [(latency <= edge).sum() for edge in EDGES]
        buckets[i, -1] = n
    for j, edge in enumerate([*EDGES.tolist(), "+Inf"]):
        le = edge if isinstance(edge, str) else f"{edge:g}"
        cumulative = np.cumsum(buckets[:, j])
        for name in ("qwen_inference_duration_seconds", "qwen_time_to_first_token_seconds"):
            out.append(Series(f"{name}_bucket", {"le": le}, t, cumulative))
    tokens = rng.poisson(80.0 * total)
    out.append(Series("qwen_output_tokens_sum", {}, t, np.cumsum(tokens).astype(float)))
    out.append(Series("qwen_output_tokens_count", {}, t, np.cumsum(total).astype(float)))
    memory = 12_000 + rng.normal(0, 30, t.size)
    out.append(Series("qwen_gpu_memory_used_mb", {"device": "0"}, t, memory))
    return out, float(t[0])


def test_every_recorded_signal_is_measured_at_its_level_and_noise(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    end = float(int(time.time()) - 600)
    series, start = traffic(end)
    prom = prometheus_factory(backfill=series)
    levels = measure_levels(prom.url, RULES, start=start + 10, end=end, short_window=5.0)
    by_signal = {lv.signal: lv for lv in levels}
    assert set(by_signal) == set(recorded_expressions(RULES))
    # What was sent in the window, by status.
    sent = {s.labels["status"]: s.values[-1] - s.values[10] for s in series[: len(RATES)]}
    total = sum(sent.values())
    rps = by_signal["requests_per_second"]
    assert rps.labels == {}
    assert rps.level == pytest.approx(total / (SPAN - 10), rel=0.02)
    # A Poisson count over the rule's 1m window.
    assert rps.sigma == pytest.approx(np.sqrt(sum(RATES.values()) / 60), rel=0.4)
    assert by_signal["error_ratio"].level == pytest.approx(sent["error"] / total, rel=0.02)
    json_ratio = by_signal["json_error_ratio"].level
    assert json_ratio == pytest.approx(sent["json_parse_error"] / total, rel=0.02)
    # Histogram quantiles interpolate linearly within a bucket: exact for uniform latencies.
    assert by_signal["latency_p95_seconds"].level == pytest.approx(2.9, abs=0.05)
    assert by_signal["latency_p99_seconds"].level == pytest.approx(2.98, abs=0.05)
    assert by_signal["ttft_p95_seconds"].level == pytest.approx(2.9, abs=0.05)
    assert by_signal["output_tokens_per_request"].level == pytest.approx(80.0, rel=0.02)
    memory = by_signal["gpu_memory_used_mb"]
    assert memory.labels == {"device": "0"}
    assert memory.level == pytest.approx(12_000, abs=10)
    assert memory.sigma == pytest.approx(30, rel=0.3)


def test_no_traffic_is_an_error_that_says_so(
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    prom = prometheus_factory()
    now = time.time()
    with pytest.raises(CalibrationError, match="no recorded signal has data"):
        measure_levels(prom.url, RULES, start=now - 60, end=now)


def test_an_unreachable_prometheus_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot query Prometheus"):
        measure_levels("http://127.0.0.1:9", RULES, start=0.0, end=60.0)
