"""Metric names, label sets and exact counts after known traffic (DESIGN.md §3 contract)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from support.serving import build, sample, serve, statuses

from serving.gpu import GpuMemoryCollector, GpuMemoryPoller
from serving.metrics import LATENCY_BUCKETS, MergedRegistry, ServingMetrics

CONTRACT = {
    "qwen_requests": "counter",
    "qwen_inference_duration_seconds": "histogram",
    "qwen_time_to_first_token_seconds": "histogram",
    "qwen_time_per_output_token_seconds": "histogram",
    "qwen_output_tokens": "histogram",
    "qwen_prompt_tokens": "histogram",
    "qwen_requests_in_flight": "gauge",
    "qwen_output_finish": "counter",
    "qwen_fault_active": "gauge",
}


def _families(registry: CollectorRegistry) -> dict[str, str]:
    return {f.name: f.type for f in registry.collect()}


def test_names_types_and_label_sets_are_exact() -> None:
    registry = CollectorRegistry()
    ServingMetrics(registry)
    families = _families(registry)
    ours = {name: kind for name, kind in families.items() if name.startswith("qwen_")}
    assert ours == CONTRACT
    assert "process_cpu_seconds" in families and "python_info" in families
    labels = {
        family.name: {
            tuple(sorted(s.labels.items()))
            for s in family.samples
            if not s.name.endswith(("_bucket", "_created"))
        }
        for family in registry.collect()
    }
    assert labels["qwen_requests"] == {
        (("status", s),) for s in ("success", "error", "timeout", "rejected", "json_parse_error")
    }
    assert labels["qwen_output_finish"] == {(("reason", r),) for r in ("stop", "length", "loop")}
    kinds = ("latency", "slow_tokens", "errors", "corrupt_json", "memory", "stall")
    assert labels["qwen_fault_active"] == {(("kind", k),) for k in kinds}
    for status in ("success", "error", "timeout", "rejected", "json_parse_error"):
        assert registry.get_sample_value("qwen_requests_total", {"status": status}) == 0.0
    for kind in kinds:
        assert registry.get_sample_value("qwen_fault_active", {"kind": kind}) == 0.0


def test_latency_buckets_span_10ms_to_120s() -> None:
    registry = CollectorRegistry()
    ServingMetrics(registry)
    for name in (
        "inference_duration_seconds",
        "time_to_first_token_seconds",
        "time_per_output_token_seconds",
    ):
        bounds = [
            s.labels["le"]
            for f in registry.collect()
            for s in f.samples
            if s.name == f"qwen_{name}_bucket"
        ]
        assert bounds[0] == "0.01" and bounds[-2] == "120.0" and bounds[-1] == "+Inf"
    assert tuple(sorted(LATENCY_BUCKETS)) == LATENCY_BUCKETS


def test_prefix_is_configurable() -> None:
    registry = CollectorRegistry()
    ServingMetrics(registry, prefix="llama", process_collectors=False)
    assert {name.split("_", 1)[1] for name in _families(registry)} == {
        n.split("_", 1)[1] for n in CONTRACT
    }
    assert all(name.startswith("llama_") for name in _families(registry))


def test_no_gpu_means_no_gpu_series() -> None:
    # This machine has no NVIDIA driver: NVML fails and the series must be absent, not zero.
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, gpu_poll_interval_s=0.05)
    metrics.start()
    time.sleep(0.2)
    metrics.stop()
    if metrics.gpu_poller.readings:
        pytest.skip("a GPU is present here")
    names = {s.name for f in registry.collect() for s in f.samples}
    assert not any("gpu_memory" in name for name in names)


def test_gpu_readings_are_exported_per_device() -> None:
    # Stands in for NVML on a machine with two GPUs (the real reader needs a driver).
    readings = iter([{"0": (1024.0, 81920.0), "1": (2048.0, 81920.0)}, {"0": (4096.0, 81920.0)}])
    poller = GpuMemoryPoller(
        interval_s=0.02, init=lambda: lambda: None, read=lambda: next(readings, {})
    )
    registry = CollectorRegistry()
    registry.register(GpuMemoryCollector(poller, "qwen"))
    assert registry.get_sample_value("qwen_gpu_memory_used_mb", {"device": "0"}) is None
    poller.start()
    deadline = time.monotonic() + 5
    while not poller.readings and time.monotonic() < deadline:
        time.sleep(0.005)
    value = registry.get_sample_value("qwen_gpu_memory_used_mb", {"device": "0"})
    assert value in (1024.0, 4096.0)
    assert registry.get_sample_value("qwen_gpu_memory_total_mb", {"device": "0"}) == 81920.0
    poller.stop()
    assert registry.get_sample_value("qwen_gpu_memory_used_mb", {"device": "0"}) is None


def test_merged_registry_keeps_first_family_of_each_name() -> None:
    app_registry = CollectorRegistry()
    ServingMetrics(app_registry)
    engine_registry = CollectorRegistry()  # plays the global registry vLLM writes to
    ProcessCollector(registry=engine_registry)
    Gauge("vllm:num_requests_running", "running", ["model_name"], registry=engine_registry).labels(
        "m"
    ).set(3)
    text = MergedRegistry(app_registry, [engine_registry]).exposition().decode()
    families = [f.name for f in text_string_to_metric_families(text)]
    assert len(families) == len(set(families))
    assert "vllm:num_requests_running" in families
    assert families.count("process_cpu_seconds") == 1
    assert 'vllm:num_requests_running{model_name="m"} 3.0' in text
    assert "_created" not in text


async def _answered(http: httpx.AsyncClient) -> int:
    """Two concurrent completions, a streamed chat and a prose answer to a JSON prompt, each
    answered with 200; their output tokens."""
    tokens = 0
    ok = [http.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 8}) for i in range(2)]
    for response in await asyncio.gather(*ok):
        assert response.status_code == 200
        tokens += response.json()["usage"]["completion_tokens"]
    chat = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    streamed = await http.post("/v1/chat/completions", json=chat)
    assert streamed.status_code == 200
    tokens += json.loads(streamed.text.split("data: ")[-2])["usage"]["completion_tokens"]
    # Prose answer to a prompt that asks for JSON: json_parse_error.
    asked = {"prompt": "List colours. Respond in JSON.", "max_tokens": 40}
    response = await http.post("/v1/completions", json=asked)
    assert response.status_code == 200
    return tokens + response.json()["usage"]["completion_tokens"]


async def _invalid_refused(http: httpx.AsyncClient) -> None:
    """``max_tokens`` 0 and a prompt longer than the context: both 400."""
    nothing = {"prompt": "p", "max_tokens": 0}
    assert (await http.post("/v1/completions", json=nothing)).status_code == 400
    too_long = {"prompt": "word " * 600, "max_tokens": 4}
    assert (await http.post("/v1/completions", json=too_long)).status_code == 400


@pytest.mark.anyio
async def test_exact_counts_after_known_traffic() -> None:
    app, engine, registry = build(max_running=2, max_queue=0, max_model_len=512)
    async with serve(app) as http:
        tokens = await _answered(http)
        await _invalid_refused(http)
        # Two running, no queue: a third concurrent request is rejected with 429.
        slow = [
            http.post("/v1/completions", json={"prompt": f"s{i}", "max_tokens": 60})
            for i in range(3)
        ]
        responses = await asyncio.gather(*slow)
        assert sorted(r.status_code for r in responses) == [200, 200, 429]
        tokens += sum(
            r.json()["usage"]["completion_tokens"] for r in responses if r.status_code == 200
        )
        assert (await http.get("/metrics")).status_code == 200  # not a generation request
    assert statuses(registry) == {
        "success": 5.0,
        "error": 0.0,
        "timeout": 0.0,
        "rejected": 3.0,
        "json_parse_error": 1.0,
    }
    completed = 6.0
    assert sample(registry, "qwen_inference_duration_seconds_count") == completed
    assert sample(registry, "qwen_time_to_first_token_seconds_count") == completed
    assert sample(registry, "qwen_output_tokens_count") == completed
    assert sample(registry, "qwen_prompt_tokens_count") == completed
    assert sample(registry, "qwen_output_tokens_sum") == tokens
    finish = {
        r: sample(registry, "qwen_output_finish_total", reason=r)
        for r in ("stop", "length", "loop")
    }
    assert sum(finish.values()) == completed
    assert sample(registry, "qwen_requests_in_flight") == 0.0
    assert engine.running == 0


@pytest.mark.anyio
async def test_metrics_endpoint_serves_the_exposition() -> None:
    app, _, _ = build(metric_prefix="demo")
    async with serve(app) as http:
        await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 3})
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "demo_requests",
        "demo_time_to_first_token_seconds",
        "process_resident_memory_bytes",
    } <= names
    assert 'demo_requests_total{status="success"} 1.0' in response.text
