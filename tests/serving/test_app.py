"""The HTTP API: OpenAI shapes, streaming, JSON modes, error paths, timeouts and disconnects."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from support.serving import LiveServer, build, sample, serve, statuses

CHAT = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
}
SCHEMA = {
    "type": "object",
    "required": ["city", "population"],
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
}


def _events(text: str) -> list[Any]:
    """Payloads of a server-sent event stream (``[DONE]`` kept as a string)."""
    payloads = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


@pytest.mark.anyio
async def test_completion_shape_and_usage() -> None:
    app, _, _ = build()
    async with serve(app) as http:
        response = await http.post(
            "/v1/completions", json={"prompt": "Say something", "max_tokens": 12}
        )
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "synthetic" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["text"]
    usage = body["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12


@pytest.mark.anyio
async def test_chat_shape() -> None:
    app, _, _ = build()
    async with serve(app) as http:
        body = (await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2000})).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_streaming_matches_the_whole_answer(path: str) -> None:
    app, _, registry = build()
    body: dict[str, Any] = dict(CHAT) if "chat" in path else {"prompt": "Tell me more"}
    body["max_tokens"] = 30
    async with serve(app) as http:
        whole = (await http.post(path, json=body)).json()
        streamed = await http.post(
            path, json={**body, "stream": True, "stream_options": {"include_usage": True}}
        )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _events(streamed.text)
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    if "chat" in path:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        expected = whole["choices"][0]["message"]["content"]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks)
        expected = whole["choices"][0]["text"]
    assert text == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert statuses(registry)["success"] == 2.0


@pytest.mark.anyio
async def test_stream_without_usage_ends_with_done() -> None:
    app, _, _ = build()
    async with serve(app) as http:
        text = (
            await http.post(
                "/v1/completions", json={"prompt": "x", "max_tokens": 3, "stream": True}
            )
        ).text
    events = _events(text)
    assert events[-1] == "[DONE]" and "usage" not in events[-2]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_json_modes(stream: bool) -> None:
    app, _, registry = build()
    formats = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
    ]
    async with serve(app) as http:
        for fmt in formats:
            body = {**CHAT, "max_tokens": 500, "response_format": fmt, "stream": stream}
            response = await http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
            if stream:
                events = _events(response.text)[:-1]
                text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
            else:
                text = response.json()["choices"][0]["message"]["content"]
            value = json.loads(text)
            assert isinstance(value, dict)
            if fmt["type"] == "json_schema":
                jsonschema.validate(value, SCHEMA)
    assert statuses(registry)["success"] == 2.0 and statuses(registry)["json_parse_error"] == 0.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"prompt": "p", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"prompt": "p", "max_tokens": 100_000}, "max_tokens", "exceeds the context length"),
        ({"prompt": "word " * 300, "max_tokens": 10}, "prompt", "exceeds the context length"),
        ({"prompt": "word " * 300}, "prompt", "exceeds the context length"),
        ({"prompt": "p", "n": 2}, "n", "less than or equal to 1"),
        ({"prompt": ["a", "b"]}, "prompt", "exactly one prompt"),
        ({"prompt": "p", "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"prompt": "p", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"max_tokens": 3}, "prompt", "Field required"),
        (
            {"prompt": "p", "response_format": {"type": "json_schema"}},
            "response_format",
            "needs a json_schema",
        ),
        (
            {
                "prompt": "p",
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}},
            },
            "response_format",
            "invalid JSON schema",
        ),
    ],
)
async def test_bad_requests_are_400_with_a_reason(body: dict, param: str, fragment: str) -> None:
    app, _, registry = build(max_model_len=256)
    async with serve(app) as http:
        response = await http.post("/v1/completions", json=body)
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and fragment in error["message"]
    assert statuses(registry)["rejected"] == 1.0 and sum(statuses(registry).values()) == 1.0


@pytest.mark.anyio
async def test_malformed_bodies_are_400() -> None:
    app, _, registry = build()
    async with serve(app) as http:
        broken = await http.post(
            "/v1/chat/completions",
            content=b'{"messages": [',
            headers={"content-type": "application/json"},
        )
        role = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}
        )
        empty = await http.post("/v1/chat/completions", json={"messages": []})
        parts = await http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}]},
        )
    for response in (broken, role, empty, parts):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"]
    assert statuses(registry)["rejected"] == 4.0


@pytest.mark.anyio
async def test_text_content_parts_are_joined() -> None:
    app, _, _ = build()
    content = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    async with serve(app) as http:
        parts = await http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": content}], "max_tokens": 20},
        )
        joined = await http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 20},
        )
    assert parts.status_code == 200
    assert parts.json()["choices"][0]["message"] == joined.json()["choices"][0]["message"]


@pytest.mark.anyio
async def test_queue_limit_gives_429() -> None:
    app, _, registry = build(max_running=1, max_queue=1)
    async with serve(app) as http:
        requests = [
            http.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 40})
            for i in range(4)
        ]
        responses = await asyncio.gather(*requests)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429]
    limited = next(r for r in responses if r.status_code == 429).json()["error"]
    assert limited["type"] == "rate_limit_error" and limited["code"] == "queue_full"
    assert statuses(registry)["rejected"] == 2.0 and statuses(registry)["success"] == 2.0
    assert sample(registry, "qwen_requests_in_flight") == 0.0


@pytest.mark.anyio
async def test_health_is_503_until_the_engine_is_ready() -> None:
    app, engine, registry = build(engine={"startup_s": 0.5, "speed": 1.0})
    async with serve(app, wait_ready=False) as http:
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["error"]["code"] == "engine_not_ready"
        early = await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 2})
        assert early.status_code == 503
        deadline = time.monotonic() + 10
        while (await http.get("/health")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert (await http.get("/health")).json() == {"status": "ok", "model": "synthetic"}
    assert statuses(registry)["rejected"] == 1.0
    assert not engine.ready()  # closed at shutdown


@pytest.mark.anyio
async def test_engine_start_failure_is_reported() -> None:
    from prometheus_client import CollectorRegistry

    from serving.app import create_app
    from serving.config import ServingSettings
    from serving.engines.synthetic import SyntheticEngine

    failures: list[BaseException] = []
    app = create_app(
        ServingSettings(engine="synthetic"),
        SyntheticEngine(max_running=0),
        CollectorRegistry(),
        on_engine_failure=failures.append,
    )
    async with serve(app, wait_ready=False) as http:
        for _ in range(100):
            if failures:
                break
            await asyncio.sleep(0.01)
        health = (await http.get("/health")).json()
    assert isinstance(failures[0], ValueError)
    assert "max_running" in health["error"]["message"]


@pytest.mark.anyio
async def test_models_and_unknown_routes() -> None:
    app, _, _ = build(served_model_name="qwen2.5-7b", max_model_len=2048)
    async with serve(app) as http:
        models = (await http.get("/v1/models")).json()
        missing = await http.get("/v1/nothing")
        wrong_method = await http.get("/v1/completions")
        answer = (
            await http.post(
                "/v1/completions", json={"prompt": "p", "max_tokens": 2, "model": "other"}
            )
        ).json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in models["data"]] == [
        ("qwen2.5-7b", "model", 2048)
    ]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert answer["model"] == "qwen2.5-7b"


@pytest.mark.anyio
async def test_timeout_gives_504_and_aborts_the_engine_request() -> None:
    app, engine, registry = build(request_timeout_s=0.2, engine={"speed": 1.0})
    async with serve(app) as http:
        start = time.perf_counter()
        response = await http.post("/v1/completions", json={"prompt": "p", "max_tokens": 200})
        elapsed = time.perf_counter() - start
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert elapsed >= 0.2
    assert engine.running == engine.waiting == 0
    assert statuses(registry)["timeout"] == 1.0 and sum(statuses(registry).values()) == 1.0
    assert sample(registry, "qwen_inference_duration_seconds_count") == 1.0
    assert sample(registry, "qwen_output_tokens_count") == 0.0


@pytest.mark.anyio
async def test_timeout_mid_stream_ends_with_an_error_event() -> None:
    app, engine, registry = build(request_timeout_s=0.3, engine={"speed": 1.0})
    async with serve(app) as http:
        response = await http.post(
            "/v1/completions", json={"prompt": "p", "max_tokens": 500, "stream": True}
        )
    events = _events(response.text)
    assert response.status_code == 200
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "timeout_error"
    assert any("choices" in e for e in events[:-2])  # tokens came before the timeout
    assert engine.running == engine.waiting == 0
    assert statuses(registry)["timeout"] == 1.0


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_and_counts_timeout(stream: bool) -> None:
    app, engine, registry = build(engine={"speed": 1.0})
    body = {"prompt": "p", "max_tokens": 1000, "stream": stream}
    with LiveServer(app) as server:
        if stream:
            with httpx.stream(
                "POST", f"{server.url}/v1/completions", json=body, timeout=10
            ) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.3)
        _wait_for(lambda: statuses(registry)["timeout"] == 1.0)
        _wait_for(lambda: engine.running == 0 and engine.waiting == 0)
        assert sample(registry, "qwen_requests_in_flight") == 0.0
        # The server keeps serving.
        after = httpx.post(
            f"{server.url}/v1/completions", json={"prompt": "p", "max_tokens": 2}, timeout=10
        )
        assert after.status_code == 200
    assert statuses(registry) == {
        "success": 1.0,
        "error": 0.0,
        "timeout": 1.0,
        "rejected": 0.0,
        "json_parse_error": 0.0,
    }


# -- generated requests (schemathesis): whatever the body, never a 5xx --------------------------
# The schema is loaded at collection (schemathesis' lazy loader does not work with pytest 9).
# schemathesis runs the app's lifespan once per process, which starts the engine in the
# background; the fixture starts it up front so the first request does not race that start. The
# engine never waits (speed inf). /admin is left out: injected faults make 5xx on purpose.
_FUZZ_APP, _FUZZ_ENGINE, _ = build(engine={"speed": math.inf}, max_model_len=512)
fuzz_schema = schemathesis.openapi.from_asgi("/openapi.json", _FUZZ_APP).exclude(
    path_regex="^/admin"
)


@pytest.fixture
def _fuzz_engine() -> None:
    if not _FUZZ_ENGINE.ready():
        asyncio.run(_FUZZ_ENGINE.start())


@pytest.mark.usefixtures("_fuzz_engine")
@fuzz_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_get_a_server_error(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
