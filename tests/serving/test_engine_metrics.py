"""The synthetic engine's vLLM metrics (vllm:*) and the KV-cache scheduler behind them."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support.serving import build, serve, vllm_series_in_rules

from serving.engines.base import EngineError, GenerationRequest
from serving.engines.engine_metrics import VLLM_SERIES, request_tokens_buckets
from serving.engines.kv_cache import KvScheduler, Slot
from serving.engines.synthetic import DEFAULT_KV_CACHE_TOKENS, SyntheticEngine

pytestmark = pytest.mark.anyio

LABELS = {"model_name": "synthetic", "engine": "0"}
# vLLM's types and label names (vllm/v1/metrics/loggers.py); prometheus_client names a counter's
# family without _total.
FAMILIES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_preemptions": "counter",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
}


def value(engine: SyntheticEngine, name: str) -> float:
    found = engine.metrics_registry.get_sample_value(name, LABELS)
    assert found is not None, name
    return found


async def _started(**params: Any) -> SyntheticEngine:
    engine = SyntheticEngine(**{"speed": 50.0, **params})
    await engine.start()
    return engine


async def _answer(engine: SyntheticEngine, rid: str, prompt: str, max_tokens: int) -> list:
    request = GenerationRequest(request_id=rid, prompt=prompt, max_tokens=max_tokens)
    return [chunk async for chunk in engine.generate(request)]


def test_names_types_and_labels_are_vllms() -> None:
    engine = SyntheticEngine()
    families = {f.name: f for f in engine.metrics_registry.collect()}
    assert {name: f.type for name, f in families.items()} == FAMILIES
    for family in families.values():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert {k: v for k, v in sample.labels.items() if k != "le"} == LABELS
            assert sample.name in VLLM_SERIES, sample.name
    # Every series exists at 0 before the first request, the gauges included.
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert value(engine, name) == 0.0
    assert value(engine, "vllm:num_preemptions_total") == 0.0


def test_prompt_token_buckets_stop_at_the_context_length() -> None:
    assert request_tokens_buckets(4096) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
    assert request_tokens_buckets(5000)[-1] == 5000


async def test_gauges_follow_the_load_and_queueing_shows_in_queue_time() -> None:
    engine = await _started(max_running=2)
    seen: list[tuple[float, float, float]] = []
    request = GenerationRequest(request_id="x", prompt="hi there " * 20, max_tokens=30)
    prompt = engine.count_prompt_tokens(request)

    async def one(i: int) -> int:
        tokens = 0
        async for chunk in engine.generate(replace(request, request_id=f"r{i}")):
            tokens = chunk.output_tokens
            seen.append(
                (
                    value(engine, "vllm:num_requests_running"),
                    value(engine, "vllm:num_requests_waiting"),
                    value(engine, "vllm:kv_cache_usage_perc"),
                )
            )
        return tokens

    tokens = await asyncio.gather(*(one(i) for i in range(5)))
    assert tokens == [30] * 5
    assert max(r for r, _, _ in seen) == 2
    assert max(w for _, w, _ in seen) == 3
    # At most two sequences of prompt + 30 tokens, in blocks of 16, out of 2,048 blocks.
    blocks = -(-(prompt + 30) // 16)
    assert 0 < max(k for _, _, k in seen) <= 2 * blocks / (DEFAULT_KV_CACHE_TOKENS // 16)
    assert value(engine, "vllm:num_requests_running") == 0.0
    assert value(engine, "vllm:kv_cache_usage_perc") == 0.0
    assert value(engine, "vllm:request_queue_time_seconds_count") == 5
    # Three of five waited for a slot, the last of them for two answers of 30 tokens in turn.
    queued = value(engine, "vllm:request_queue_time_seconds_sum")
    assert queued >= 2 * 29 * engine.tpot_s / engine.speed
    assert value(engine, "vllm:request_prompt_tokens_sum") == 5 * prompt
    assert value(engine, "vllm:request_decode_time_seconds_count") == 5
    assert value(engine, "vllm:request_prefill_time_seconds_sum") > 0
    assert value(engine, "vllm:inter_token_latency_seconds_count") == 5 * 29
    assert value(engine, "vllm:num_preemptions_total") == 0.0


async def test_a_full_kv_cache_preempts_the_newest_sequence_which_recomputes() -> None:
    # Four blocks of 16 tokens; two answers of ~50 tokens each cannot both stay.
    engine = await _started(max_running=4, max_model_len=64, kv_cache_tokens=64)
    reference = await _started(speed=math.inf)
    usage: list[float] = []

    async def one(rid: str) -> str:
        request = GenerationRequest(request_id=rid, prompt="tell me a story", max_tokens=45)
        text = ""
        async for chunk in engine.generate(request):
            usage.append(engine.kv_cache_usage)
            text += chunk.text
        return text

    texts = await asyncio.gather(one("a"), one("b"))
    assert engine.preemptions >= 1
    assert value(engine, "vllm:num_preemptions_total") == engine.preemptions
    assert max(usage) == 1.0
    # Preemption costs time, never tokens: both answers are whole and as without it.
    expected = [
        "".join(c.text for c in await _answer(reference, rid, "tell me a story", 45))
        for rid in ("a", "b")
    ]
    assert texts == expected
    assert value(engine, "vllm:request_decode_time_seconds_count") == 2
    assert engine.kv_cache_usage == 0.0 and engine.running == engine.waiting == 0


async def test_an_aborted_queued_request_leaves_the_queue() -> None:
    engine = await _started(max_running=1)
    first = asyncio.create_task(_answer(engine, "a", "hi", 200))
    second = asyncio.create_task(_answer(engine, "b", "hi", 5))
    await asyncio.sleep(0.01)
    assert (engine.running, engine.waiting) == (1, 1)
    await engine.abort("b")
    with pytest.raises(EngineError, match="aborted"):
        await second
    assert engine.waiting == 0
    await engine.abort("a")
    with pytest.raises(EngineError, match="aborted"):
        await first
    # Ended requests leave no per-request observation, as in vLLM.
    assert value(engine, "vllm:request_queue_time_seconds_count") == 0.0


async def test_a_kv_cache_smaller_than_the_context_is_refused() -> None:
    with pytest.raises(ValueError, match="kv_cache_tokens"):
        await SyntheticEngine(max_model_len=4096, kv_cache_tokens=1024).start()
    assert SyntheticEngine(max_model_len=100_000).kv_capacity() == 100_000


def test_the_queue_head_holds_back_those_behind_it() -> None:
    scheduler = KvScheduler(max_running=8, capacity_tokens=64)
    big, small, later = Slot(tokens=40), Slot(tokens=40), Slot(tokens=1)
    for slot in (big, small, later):
        scheduler.enqueue(slot)
    # big holds three blocks; small needs three of the one left, and later (one block) waits
    # behind it although it would fit.
    assert (big.running, small.running, later.running) == (True, False, False)
    scheduler.release(big)
    assert (small.running, later.running) == (True, True)
    assert scheduler.usage() == 1.0
    scheduler.release(small)
    scheduler.release(later)
    assert scheduler.usage() == 0.0 and scheduler.running == scheduler.waiting == 0


async def test_metrics_endpoint_exports_the_engines_vllm_series() -> None:
    app, engine, registry = build(registry=CollectorRegistry())
    async with serve(app) as http:
        await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 3})
        text = (await http.get("/metrics")).text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert names >= VLLM_SERIES
    assert 'vllm:request_queue_time_seconds_count{engine="0",model_name="synthetic"} 1.0' in text
    # The engine's series live apart from the app's own registry.
    assert registry.get_sample_value("vllm:num_requests_running", LABELS) is None
    assert engine.metrics_registry.get_sample_value("vllm:num_requests_running", LABELS) == 0


def test_the_synthetic_engine_exports_every_vllm_series_the_rules_read() -> None:
    read = vllm_series_in_rules()
    assert {"vllm:num_preemptions_total", "vllm:kv_cache_usage_perc"} <= read
    engine = SyntheticEngine()
    exposed = {s.name for f in engine.metrics_registry.collect() for s in f.samples}
    assert read <= exposed
    assert read <= VLLM_SERIES


async def test_a_cache_the_size_of_the_context_runs_the_longest_request() -> None:
    # 100 tokens are not a whole number of blocks: the cache still holds one such sequence.
    # Looping answers run to max_tokens.
    engine = await _started(max_model_len=100, kv_cache_tokens=100, max_running=2, loop_share=1.0)
    request = GenerationRequest(request_id="x", prompt="hi", max_tokens=98)
    assert engine.count_prompt_tokens(request) == 1
    answers = await asyncio.wait_for(
        asyncio.gather(*(_answer(engine, r, "hi", 98) for r in ("a", "b"))), timeout=30
    )
    assert [a[-1].output_tokens for a in answers] == [98, 98]
    assert engine.preemptions >= 1
