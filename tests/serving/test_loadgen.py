"""The load generator: bounds, prompt mix and traffic shapes, against a real synthetic server."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from support.serving import LiveServer, build, sample, statuses

from llmwatch.cli import build_parser, main
from serving.config import DEFAULT_JSON_PROMPT_PATTERN
from serving.loadgen import LoadSettings, run_load, summarize
from serving.workload import KINDS, arrival_times, daily_rate_factor, sample_request

URL = "http://127.0.0.1:9"  # never contacted: for argument checks only


@pytest.mark.parametrize(
    "bounds",
    [["--max-requests", "5"], ["--max-duration", "5s"], []],
    ids=["no-duration", "no-requests", "neither"],
)
def test_both_bounds_are_required(bounds: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["loadgen", "--url", URL, *bounds])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-requests", "0", "--max-duration", "5s"], "max_requests"),
        (["--max-requests", "5", "--max-duration", "0s"], "max_duration"),
        (["--max-requests", "5", "--max-duration", "5s", "--concurrency", "0"], "concurrency"),
        (["--max-requests", "5", "--max-duration", "5s", "--shape", "daily"], "--rate"),
        (["--max-requests", "5", "--max-duration", "soon"], "soon"),
    ],
)
def test_bad_values_are_errors_naming_them(
    args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["loadgen", "--url", URL, *args]) == 1
    assert message in capsys.readouterr().err


def test_prompt_mix_is_seeded_and_shaped_like_a_chat_service() -> None:
    draw = [sample_request(random.Random(7), max_tokens=40) for _ in range(2)]
    assert draw[0] == draw[1]
    rng = random.Random(0)
    requests = [sample_request(rng, max_tokens=40, stream=True) for _ in range(3000)]
    shares = Counter(r.kind for r in requests)
    for kind, share in KINDS.items():
        assert shares[kind] / len(requests) == pytest.approx(share, abs=0.03)
    pattern = re.compile(DEFAULT_JSON_PROMPT_PATTERN)
    for request in requests:
        body = request.body
        assert body["max_tokens"] <= 40
        assert body["stream"] and body["stream_options"] == {"include_usage": True}
        fmt = (body.get("response_format") or {}).get("type")
        asked_in_words = bool(pattern.search(body["messages"][-1]["content"]))
        expected = {"json_schema": "json_schema", "json_object": "json_object"}.get(request.kind)
        assert fmt == expected
        # JSON asked for in words only is what the server's prompt convention recognises.
        assert asked_in_words == (request.kind == "json_prompt")
        assert request.wants_json == (fmt is not None or asked_in_words)
    assert len({json.dumps(r.body["messages"]) for r in requests}) > 50


def test_daily_curve_is_low_at_night_and_high_in_the_afternoon() -> None:
    factors = [daily_rate_factor(h / 4) for h in range(96)]
    assert min(factors) == pytest.approx(0.2) and max(factors) == pytest.approx(1.0)
    assert factors.index(min(factors)) == 16 and factors.index(max(factors)) == 64
    # 50 compressed days of 24 s at a 10/s peak: night (02-06 h) vs afternoon (14-18 h).
    times = arrival_times(random.Random(3), rate=10.0, day_length_s=24.0)
    hours = Counter()
    for t in times:
        if t > 24.0 * 50:
            break
        hours[int(t % 24.0)] += 1
    night = sum(hours[h] for h in range(2, 6))
    afternoon = sum(hours[h] for h in range(14, 18))
    assert 0.15 < night / afternoon < 0.35


def test_constant_arrivals_have_the_asked_rate() -> None:
    times = arrival_times(random.Random(1), rate=20.0)
    first = [next(times) for _ in range(4000)]
    assert first == sorted(first)
    assert 4000 / first[-1] == pytest.approx(20.0, rel=0.05)
    with pytest.raises(ValueError, match="rate"):
        next(arrival_times(random.Random(1), rate=0.0))


def test_settings_refuse_a_daily_shape_without_rate() -> None:
    with pytest.raises(ValueError, match="peak rate"):
        LoadSettings(url=URL, max_requests=1, max_duration_s=1, day_length_s=60)


@pytest.mark.anyio
async def test_closed_loop_counts_agree_with_the_server() -> None:
    app, _, registry = build()
    with LiveServer(app) as server:
        settings = LoadSettings(
            url=server.url, max_requests=40, max_duration_s=60, concurrency=8, max_tokens=48
        )
        results, wall = await run_load(settings)
    summary = summarize(results, wall)
    assert summary["requests"] == 40
    assert summary["by_outcome"] == {"200": 40}
    counted = statuses(registry)
    assert counted["success"] + counted["json_parse_error"] == 40
    invalid = summary["json"]["asked"] - summary["json"]["valid"]
    # The client's own JSON check and the server's quality check see the same answers.
    assert counted["json_parse_error"] == invalid
    assert sample(registry, "qwen_output_tokens_sum") == summary["output_tokens"] > 0
    assert sample(registry, "qwen_prompt_tokens_sum") == summary["prompt_tokens"]
    assert summary["latency_s"]["p50"] <= summary["latency_s"]["p99"]
    assert all(r.ttft_s is not None and r.ttft_s <= r.latency_s for r in results)


@pytest.mark.anyio
async def test_duration_bound_cancels_requests_in_flight() -> None:
    # Real-time synthetic engine at 5 tokens/s: every answer outlasts the run.
    app, _, registry = build(engine={"speed": 1.0, "tpot_s": 0.2})
    with LiveServer(app) as server:
        settings = LoadSettings(
            url=server.url, max_requests=100, max_duration_s=1.0, concurrency=4, stream=False
        )
        results, wall = await run_load(settings)
        summary = summarize(results, wall)
        assert summary["by_outcome"] == {"cancelled": 4}
        assert 1.0 <= wall < 4.0
        # The server saw the clients leave: each counts as timeout and frees its slot.
        for _ in range(200):
            if statuses(registry)["timeout"] == 4:
                break
            await asyncio.sleep(0.02)
        assert statuses(registry)["timeout"] == 4
        assert sample(registry, "qwen_requests_in_flight") == 0


@pytest.mark.anyio
async def test_open_loop_follows_the_rate_not_the_capacity() -> None:
    app, _, registry = build()
    with LiveServer(app) as server:
        settings = LoadSettings(
            url=server.url, max_requests=1000, max_duration_s=2.0, concurrency=16, rate=15.0,
            max_tokens=16,
        )  # fmt: skip
        results, _ = await run_load(settings)
    # About 30 arrivals in 2 s (a closed loop would send hundreds to this fast engine).
    assert 15 <= len(results) <= 50
    done = sum(r.outcome == "200" for r in results)
    assert sum(statuses(registry).values()) >= done


def test_cli_prints_a_summary_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    app, _, _ = build()
    out = tmp_path / "load.json"
    with LiveServer(app) as server:
        argv = ["loadgen", "--url", server.url, "--max-requests", "6", "--max-duration", "30s",
                "--concurrency", "2", "--max-tokens", "24", "--json", str(out)]  # fmt: skip
        assert main(argv) == 0
    text = capsys.readouterr().out
    assert "outcomes     200: 6" in text
    summary = json.loads(out.read_text())
    assert summary["requests"] == 6 and summary["by_outcome"] == {"200": 6}
    assert summary["output_tokens_per_s"] > 0
