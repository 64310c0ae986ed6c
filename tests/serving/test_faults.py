"""Fault injection: schedule validation, admin API and auth, and each kind's visible effect."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI
from support.serving import build, sample, serve, statuses

from serving.engines.base import GenerationRequest
from serving.fault_spec import FaultKind, FaultScheduleError, FaultSpec, load_schedule
from serving.faults import CORRUPTION_PREFIX
from serving.metrics import FAULT_KINDS

_MIB = 1024 * 1024


@contextlib.asynccontextmanager
async def _local(app: FastAPI, **client: Any) -> AsyncIterator[httpx.AsyncClient]:
    """``serve``, its requests addressed to ``localhost``: the admin API refuses other names."""
    async with serve(app, **client) as http:
        http.headers["host"] = "localhost"
        yield http


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    return path


def test_schedule_file_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "faults:\n"
        "  - {kind: latency, start: 60, duration: 2m, intensity: 1.5}\n"
        "  - {kind: latency, start: 1h, duration: 30s, intensity: 3, mode: proportional}\n"
        "  - {kind: errors, start: 0, duration: 10, intensity: 0.25, note: deploy went wrong}\n"
        "  - {kind: memory, start: 5, intensity: 256, ramp: 1m}\n"
        "  - {kind: stall, start: 5, duration: 5}\n",
    )
    specs = load_schedule(path)
    assert [s.kind for s in specs] == ["latency", "latency", "errors", "memory", "stall"]
    assert specs[0].duration == 120.0 and specs[1].start == 3600.0
    assert specs[1].mode == "proportional" and specs[3].ramp == 60.0 and specs[3].duration is None
    assert load_schedule(_write(tmp_path, "- {kind: stall, duration: 1}\n"))[0].kind == "stall"
    assert load_schedule(_write(tmp_path, "")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "faults:\n  - {kind: stall}\n  - {kind: errors, strength: 0.5}\n",
            r"faults\[1\]\.strength: unknown key",
        ),
        ("faults:\n  - {kind: meltdown}\n", r"faults\[0\]\.kind: Input should be"),
        (
            "faults:\n  - {kind: errors, intensity: 1.5}\n",
            r"faults\[0\]: .*intensity: a share in \(0, 1\]",
        ),
        ("faults:\n  - {kind: errors, mode: proportional}\n", r"mode: only latency faults"),
        ("faults:\n  - {kind: latency, intensity: 0.5, mode: proportional}\n", r"factor above 1"),
        (
            "faults:\n  - {kind: stall, duration: soon}\n",
            r"faults\[0\]\.duration: .*not a duration",
        ),
        ("faults:\n  - {kind: stall, start: -4}\n", r"faults\[0\]\.start"),
        ("fautls: []\n", r"unknown key 'fautls'"),
        ("faults: {kind: stall}\n", r"must be a list"),
        ("faults:\n  - stall\n", r"faults\[0\] must be a mapping"),
        ("faults: [unclosed\n", r"not YAML"),
    ],
)
def test_schedule_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FaultScheduleError, match=message):
        load_schedule(_write(tmp_path, text))


def test_bad_schedule_fails_at_app_creation(tmp_path: Path) -> None:
    path = _write(tmp_path, "faults:\n  - {kind: latency, intensty: 2}\n")
    with pytest.raises(FaultScheduleError, match="intensty: unknown key"):
        build(faults_file=path)


# -- admin API ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_admin_refuses_non_loopback_clients() -> None:
    app, _, _ = build()
    async with _local(app, client=("10.1.2.3", 40000)) as http:
        response = await http.get("/admin/faults")
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_error"
        assert (await http.post("/admin/faults", json={"kind": "stall"})).status_code == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.io", "localhost.", ""]
)
async def test_admin_refuses_foreign_host_names(host: str) -> None:
    """DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1."""
    app, _, _ = build()
    async with serve(app) as http:
        http.headers["host"] = host
        response = await http.post("/admin/faults", json={"kind": "stall", "duration": 60})
        listed = await http.get("/admin/faults")
        assert (await http.get("/health")).status_code == 200  # the rest of the API answers
    assert response.status_code == 400 and listed.status_code == 400
    message = response.json()["error"]["message"]
    assert "DNS rebinding" in message and f"Host {host!r}" in message
    assert "127.0.0.1, [::1], localhost (any port)" in message
    assert app.state.serving.faults.faults() == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "localhost:8080"),
        ("127.0.0.1", "LOCALHOST"),
        ("127.0.0.1", "[::1]:8080"),
        ("::1", "[::1]"),
        ("127.0.0.2", "127.0.0.2:9000"),  # the bind host
    ],
)
async def test_admin_accepts_loopback_names_and_the_bind_host(bind: str, host: str) -> None:
    app, _, _ = build(host=bind)
    async with serve(app) as http:
        http.headers["host"] = host
        response = await http.get("/admin/faults")
    assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_admin_token_is_required_when_set() -> None:
    app, _, _ = build(admin_token="s3cret")
    async with _local(app) as http:
        missing = await http.get("/admin/faults")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/admin/faults", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = await http.get("/admin/faults", headers={"Authorization": "Basic s3cret"})
        assert basic.status_code == 401
        good = await http.get("/admin/faults", headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and good.json()["faults"] == []


@pytest.mark.anyio
async def test_admin_validates_fault_bodies() -> None:
    app, _, _ = build(fault_memory_max_mb=100)
    async with _local(app) as http:
        unknown = await http.post("/admin/faults", json={"kind": "stall", "strength": 1})
        assert unknown.status_code == 400 and "strength" in unknown.json()["error"]["message"]
        kind = await http.post("/admin/faults", json={"kind": "melt"})
        assert kind.status_code == 400 and kind.json()["error"]["param"] == "kind"
        memory = await http.post("/admin/faults", json={"kind": "memory", "intensity": 500})
        assert (
            memory.status_code == 400 and "fault_memory_max_mb" in memory.json()["error"]["message"]
        )
        assert (await http.delete("/admin/faults/99")).status_code == 404


async def _add(http: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    response = await http.post("/admin/faults", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


async def _wait_state(
    http: httpx.AsyncClient, fault_id: int, state: str, timeout: float = 10
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fault in (await http.get("/admin/faults")).json()["faults"]:
            if fault["id"] == fault_id and fault["state"] == state:
                return fault
        await asyncio.sleep(0.02)
    raise AssertionError(f"fault {fault_id} never reached {state}")


@pytest.mark.anyio
async def test_fault_lifecycle_gauge_and_window_log() -> None:
    app, _, registry = build()
    async with _local(app) as http:
        before = time.time()
        pending = await _add(http, kind="latency", start=0.2, duration=0.3, intensity=0.01)
        assert pending["state"] == "pending" and pending["started_at"] is None
        assert sample(registry, "qwen_fault_active", kind="latency") == 0.0
        active = await _wait_state(http, pending["id"], "active")
        assert sample(registry, "qwen_fault_active", kind="latency") == 1.0
        ended = await _wait_state(http, pending["id"], "ended")
        assert sample(registry, "qwen_fault_active", kind="latency") == 0.0
        assert before + 0.2 <= ended["started_at"] == active["started_at"] < ended["ended_at"]
        assert ended["ended_at"] - ended["started_at"] >= 0.29
        # An open-ended fault runs until deleted; deleting a pending one cancels it.
        open_ = await _add(http, kind="stall")
        assert open_["state"] == "active" and open_["end_at"] is None
        assert sample(registry, "qwen_fault_active", kind="stall") == 1.0
        deleted = (await http.delete(f"/admin/faults/{open_['id']}")).json()
        assert (
            deleted["state"] == "ended"
            and sample(registry, "qwen_fault_active", kind="stall") == 0.0
        )
        later = await _add(http, kind="errors", start=60, intensity=0.5)
        cancelled = (await http.delete(f"/admin/faults/{later['id']}")).json()
        assert cancelled["state"] == "ended" and cancelled["started_at"] is None
        listing = (await http.get("/admin/faults")).json()
        assert [f["id"] for f in listing["faults"]] == [pending["id"], open_["id"], later["id"]]
        assert listing["active_kinds"] == []


@pytest.mark.anyio
async def test_schedule_file_drives_faults(tmp_path: Path) -> None:
    path = _write(tmp_path, "faults:\n  - {kind: errors, start: 0, duration: 0.3, intensity: 1}\n")
    app, _, registry = build(faults_file=path)
    async with _local(app) as http:
        assert sample(registry, "qwen_fault_active", kind="errors") == 1.0
        failed = await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 4})
        assert failed.status_code == 500
        fault = (await http.get("/admin/faults")).json()["faults"][0]
        assert fault["source"] == "schedule"
        await _wait_state(http, fault["id"], "ended")
        assert (
            await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 4})
        ).status_code == 200
    assert statuses(registry)["error"] == 1.0 and statuses(registry)["success"] == 1.0


# -- effects --------------------------------------------------------------------------------------


async def _timed(
    http: httpx.AsyncClient, body: dict[str, Any], path: str = "/v1/completions"
) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = await http.post(path, json=body)
    return response, time.perf_counter() - start


@pytest.mark.anyio
async def test_fixed_latency_delays_the_first_token() -> None:
    app, _, registry = build()
    async with _local(app) as http:
        await _add(http, kind="latency", intensity=0.25)
        response, elapsed = await _timed(http, {"prompt": "p", "max_tokens": 3})
    assert response.status_code == 200 and elapsed >= 0.25
    assert sample(registry, "qwen_time_to_first_token_seconds_sum") >= 0.25
    assert sample(registry, "qwen_time_to_first_token_seconds_bucket", le="0.15") == 0.0


@pytest.mark.anyio
async def test_proportional_latency_stretches_the_engine_time() -> None:
    app, engine, _ = build(engine={"speed": 10.0})
    body = {"prompt": "p", "max_tokens": 20}
    async with _local(app) as http:
        await _add(http, kind="latency", intensity=4, mode="proportional")
        response, elapsed = await _timed(http, body)
    prompt_tokens = engine.count_prompt_tokens(GenerationRequest(request_id="x", prompt="p"))
    modelled = (engine.prefill_s(prompt_tokens) + 19 * engine.token_s(1)) / engine.speed
    assert response.status_code == 200 and elapsed >= 4 * modelled * 0.95


@pytest.mark.anyio
async def test_slow_tokens_raise_time_per_output_token() -> None:
    app, _, registry = build()
    async with _local(app) as http:
        await _add(http, kind="slow_tokens", intensity=0.01)
        response, elapsed = await _timed(http, {"prompt": "p", "max_tokens": 21})
    assert response.status_code == 200 and elapsed >= 0.2
    assert sample(registry, "qwen_time_per_output_token_seconds_sum") >= 0.01


@pytest.mark.anyio
async def test_error_bursts_fail_a_share_of_requests() -> None:
    app, engine, registry = build(max_queue=100)
    async with _local(app) as http:
        await _add(http, kind="errors", intensity=1.0)
        failed = await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 3})
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "server_error"
        stream = await http.post(
            "/v1/completions", json={"prompt": "p", "max_tokens": 3, "stream": True}
        )
        assert stream.status_code == 500
        for fault in (await http.get("/admin/faults")).json()["faults"]:
            await http.delete(f"/admin/faults/{fault['id']}")
        await _add(http, kind="errors", intensity=0.5)
        results = await asyncio.gather(
            *(
                http.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 2})
                for i in range(40)
            )
        )
    codes = [r.status_code for r in results]
    assert set(codes) == {200, 500}
    assert 8 <= codes.count(500) <= 32
    counts = statuses(registry)
    assert counts["error"] == 2 + codes.count(500) and counts["success"] == codes.count(200)
    assert engine.running == 0


@pytest.mark.anyio
async def test_corrupt_json_breaks_json_answers_only() -> None:
    app, _, registry = build()
    json_body = {"prompt": "p", "max_tokens": 300, "response_format": {"type": "json_object"}}
    async with _local(app) as http:
        await _add(http, kind="corrupt_json", intensity=1.0)
        broken = await http.post("/v1/completions", json=json_body)
        plain = await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 5})
    assert broken.status_code == 200
    assert broken.json()["choices"][0]["text"].startswith(CORRUPTION_PREFIX)
    assert not plain.json()["choices"][0]["text"].startswith(CORRUPTION_PREFIX)
    assert statuses(registry)["json_parse_error"] == 1.0 and statuses(registry)["success"] == 1.0


@pytest.mark.anyio
async def test_memory_growth_is_real_and_released() -> None:
    app, _, registry = build()
    state = app.state.serving
    async with _local(app) as http:
        rss_before = sample(registry, "process_resident_memory_bytes")
        fault = await _add(http, kind="memory", intensity=96, ramp=0.3)
        deadline = time.monotonic() + 10
        seen = []
        while state.faults.memory_bytes < 96 * _MIB and time.monotonic() < deadline:
            seen.append(state.faults.memory_bytes)
            await asyncio.sleep(0.05)
        assert state.faults.memory_bytes == 96 * _MIB
        assert any(0 < b < 96 * _MIB for b in seen)  # it grew in steps
        rss_during = sample(registry, "process_resident_memory_bytes")
        assert rss_during - rss_before >= 80 * _MIB
        await http.delete(f"/admin/faults/{fault['id']}")
        assert state.faults.memory_bytes == 0
        assert (await http.get("/admin/faults")).json()["memory_bytes"] == 0
        assert rss_during - sample(registry, "process_resident_memory_bytes") >= 80 * _MIB


@pytest.mark.anyio
async def test_stall_holds_tokens_until_it_ends_or_the_timeout() -> None:
    app, engine, registry = build(request_timeout_s=0.3)
    async with _local(app) as http:
        fault = await _add(http, kind="stall")
        timed_out, elapsed = await _timed(http, {"prompt": "p", "max_tokens": 5})
        assert timed_out.status_code == 504 and elapsed >= 0.3
        assert engine.running == engine.waiting == 0  # the engine request was aborted
        await http.delete(f"/admin/faults/{fault['id']}")
        await _add(http, kind="stall", duration=0.15)
        held, elapsed = await _timed(http, {"prompt": "p", "max_tokens": 5})
        assert held.status_code == 200 and elapsed >= 0.1
    assert statuses(registry)["timeout"] == 1.0 and statuses(registry)["success"] == 1.0


def test_fault_spec_defaults() -> None:
    spec = FaultSpec(kind="stall")
    assert (spec.start, spec.duration, spec.intensity, spec.mode) == (0.0, None, 1.0, "fixed")


def test_fault_kinds_agree_with_the_metric_labels() -> None:
    assert get_args(FaultKind) == FAULT_KINDS
