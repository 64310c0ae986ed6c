"""Admission through the app: schemas refused with a 400 (never fetched, never a 500), schema
bombs and long prompts answered without stalling the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.serving import LiveServer, build, serve, statuses

from serving.json_schema import MAX_DEPTH


def _chat(schema: dict[str, Any], **fields: Any) -> dict[str, Any]:
    format_ = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    return {"messages": [{"role": "user", "content": "x"}], "response_format": format_, **fields}


@contextlib.contextmanager
def _schema_host() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback serving a schema; yields its URL and the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"type": "integer"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/schema+json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_a_remote_ref_is_refused_and_never_fetched() -> None:
    app, _, registry = build()
    with _schema_host() as (url, asked):
        async with serve(app) as http:
            responses = [
                await http.post("/v1/chat/completions", json=_chat(schema))
                for schema in (
                    {"$ref": url},
                    {"type": "object", "properties": {"n": {"$ref": url}}},
                    {"$ref": "https://example.com/schema.json"},
                )
            ]
    for response in responses:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (
            error["param"] == "response_format" and "points outside the schema" in error["message"]
        )
    assert asked == []
    assert statuses(registry)["rejected"] == 3


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "no-such-type"}, "invalid JSON schema"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"$schema": 5}, "$schema must be a dialect URI"),
        ({"$schema": "https://example.com/dialect"}, "not a JSON Schema dialect"),
        (_nested(MAX_DEPTH + 1), "nests deeper"),
        (_nested(400), "nests deeper"),  # past where jsonschema hit Python's recursion limit
    ],
)
async def test_unusable_schemas_are_a_400_with_the_reason(
    schema: dict[str, Any], reason: str
) -> None:
    app, _, registry = build()
    async with serve(app) as http:
        response = await http.post("/v1/chat/completions", json=_chat(schema))
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]["message"]
    assert statuses(registry)["rejected"] == 1


@pytest.mark.anyio
async def test_a_body_nested_too_deeply_to_parse_is_a_counted_400() -> None:
    app, _, registry = build()
    body = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with serve(app) as http:
        response = await http.post(
            "/v1/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "nests too deeply" in response.json()["error"]["message"]
    assert statuses(registry)["rejected"] == 1


def test_a_schema_bomb_is_answered_fast_and_health_stays_responsive() -> None:
    bomb = {"type": "array", "minItems": 2_000_000, "items": {"type": "integer"}}
    app, _, registry = build(engine={"speed": 1.0})  # real token timing: ~0.2 s for 8 tokens
    with LiveServer(app) as server:
        health: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                start = time.monotonic()
                code = httpx.get(f"{server.url}/health", timeout=5).status_code
                health.append(time.monotonic() - start if code == 200 else float("inf"))
                done.wait(0.02)

        poller = threading.Thread(target=probe)
        poller.start()
        try:
            start = time.monotonic()
            response = httpx.post(
                f"{server.url}/v1/chat/completions", json=_chat(bomb, max_tokens=8), timeout=10
            )
            took = time.monotonic() - start
        finally:
            done.set()
            poller.join()
    assert response.status_code == 200 and took < 1.5
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "length" and choice["message"]["content"].startswith("[")
    assert response.json()["usage"]["completion_tokens"] == 8
    assert health and max(health) < 0.5
    assert statuses(registry)["json_parse_error"] == 1  # truncated JSON


@pytest.mark.anyio
async def test_a_long_prompt_is_tokenised_off_the_event_loop() -> None:
    # 8 MB of prompt: tokenised on the loop it stalled the loop for 0.7 s, off it for ~30 ms.
    app, _, registry = build(max_body_bytes=16 * 2**20, max_model_len=3_000_000)
    messages = [
        {"role": "user", "content": "word " * 1_600_000},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Summarise."},
    ]
    body = json.dumps({"messages": messages, "max_tokens": 4}).encode()
    loop = asyncio.get_running_loop()
    worst = 0.0
    async with serve(app) as http:
        request = asyncio.create_task(
            http.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
        )
        while not request.done():
            before = loop.time()
            await asyncio.sleep(0.002)
            worst = max(worst, loop.time() - before - 0.002)
        response = await request
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 1_600_000
    assert worst < 0.1, f"the event loop stalled for {worst * 1000:.0f} ms"
    assert statuses(registry)["success"] == 1
