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
VLLM = {"model_name": "m", "engine": "0"}  # the labels vLLM puts on its vllm:* series
_HISTOGRAMS = {
    "qwen_inference_duration_seconds": {},
    "qwen_time_to_first_token_seconds": {},
    "vllm:request_queue_time_seconds": VLLM,
    "vllm:request_prefill_time_seconds": VLLM,
    "vllm:request_decode_time_seconds": VLLM,
    "vllm:inter_token_latency_seconds": VLLM,
}


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
        for name, labels in _HISTOGRAMS.items():
            out.append(Series(f"{name}_bucket", {**labels, "le": le}, t, cumulative))
    tokens = rng.poisson(80.0 * total)
    out.append(Series("qwen_output_tokens_sum", {}, t, np.cumsum(tokens).astype(float)))
    out.append(Series("qwen_output_tokens_count", {}, t, np.cumsum(total).astype(float)))
    memory = 12_000 + rng.normal(0, 30, t.size)
    out.append(Series("qwen_gpu_memory_used_mb", {"device": "0"}, t, memory))
    return out + _engine(rng, t, total), float(t[0])


def _engine(rng: np.random.Generator, t: np.ndarray, requests: np.ndarray) -> list[Series]:
    """vLLM's gauges and counters: about six requests running, none waiting, 0.1 preemption/s."""
    running = rng.poisson(6.0, t.size).astype(float)
    prompts = np.cumsum(rng.poisson(300.0 * requests)).astype(float)
    return [
        Series("vllm:num_requests_running", VLLM, t, running),
        Series("vllm:num_requests_waiting", VLLM, t, np.zeros(t.size)),
        Series("vllm:kv_cache_usage_perc", VLLM, t, running * 512 / 32_768),
        Series("vllm:num_preemptions_total", VLLM, t, np.cumsum(rng.poisson(0.1, t.size)) * 1.0),
        Series("vllm:request_prompt_tokens_sum", VLLM, t, prompts),
        Series("vllm:request_prompt_tokens_count", VLLM, t, np.cumsum(requests).astype(float)),
    ]


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
    # vLLM's signals, from series as vLLM names and labels them; the rules keep no label.
    running = by_signal["requests_running"]
    assert running.labels == {}
    assert running.level == pytest.approx(6.0, abs=1.0)
    assert running.sigma == pytest.approx(np.sqrt(6.0), rel=0.3)
    assert by_signal["kv_cache_usage_ratio"].level == pytest.approx(6.0 * 512 / 32_768, rel=0.2)
    assert (by_signal["requests_waiting"].level, by_signal["requests_waiting"].sigma) == (0, 0)
    (preempted,) = [s.values for s in series if s.name == "vllm:num_preemptions_total"]
    preemptions = (preempted[-1] - preempted[10]) / (SPAN - 10)
    assert by_signal["preemptions_per_second"].level == pytest.approx(preemptions, rel=0.02)
    assert by_signal["prompt_tokens_per_request"].level == pytest.approx(300.0, rel=0.02)
    assert by_signal["queue_time_p95_seconds"].level == pytest.approx(2.9, abs=0.05)


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
