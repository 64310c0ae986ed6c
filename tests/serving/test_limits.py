"""The request body limit: 413 before parsing, for declared lengths and for chunked bodies."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from support.serving import LiveServer, build, serve, statuses

LIMIT = 4096
PROMPT = {"prompt": "Say something", "max_tokens": 4}


def _padded(size: int) -> bytes:
    """A valid completion request of exactly ``size`` bytes."""
    body = json.dumps({**PROMPT, "user": ""}).encode()
    return json.dumps({**PROMPT, "user": "x" * (size - len(body))}).encode()


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert f"limit of {LIMIT} bytes" in error["message"]
    assert "LLMWATCH_SERVING_MAX_BODY_BYTES" in error["message"]
    assert response.headers["connection"] == "close"


@pytest.mark.anyio
async def test_a_body_up_to_the_limit_is_served_and_one_byte_more_refused() -> None:
    app, _, registry = build(max_body_bytes=LIMIT)
    headers = {"content-type": "application/json"}
    async with serve(app) as http:
        fits = await http.post("/v1/completions", content=_padded(LIMIT), headers=headers)
        assert fits.status_code == 200, fits.text
        over = await http.post("/v1/completions", content=_padded(LIMIT + 1), headers=headers)
    _assert_refused(over)
    assert "(4097 bytes)" in over.json()["error"]["message"]
    assert statuses(registry)["rejected"] == 1 and statuses(registry)["success"] == 1


@pytest.mark.anyio
async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    app, _, registry = build(max_body_bytes=LIMIT)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 1 MB offered, without a Content-Length
            sent += 1000
            yield b" " * 1000

    async with serve(app) as http:
        response = await http.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
    _assert_refused(response)
    assert sent <= LIMIT + 1000  # reading stopped at the limit
    assert statuses(registry)["rejected"] == 1


@pytest.mark.anyio
async def test_every_endpoint_is_limited_and_only_generations_are_counted() -> None:
    app, _, registry = build(max_body_bytes=LIMIT)
    async with serve(app) as http:
        http.headers["host"] = "localhost"  # the admin API answers loopback names only
        admin = await http.post("/admin/faults", content=b"{" + b" " * LIMIT + b"}")
        unknown = await http.post("/v1/nothing-here", content=b" " * (LIMIT + 1))
    _assert_refused(admin)
    _assert_refused(unknown)
    assert statuses(registry)["rejected"] == 0


def _probe_health(url: str, stop: threading.Event, took: list[float]) -> None:
    """Poll ``/health`` until ``stop``; each answer's time, or inf for a failure."""
    while not stop.is_set():
        start = time.monotonic()
        try:
            ok = httpx.get(f"{url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            ok = False
        took.append(time.monotonic() - start if ok else float("inf"))
        stop.wait(0.05)


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def test_a_40_mb_declaration_is_answered_at_once_on_a_real_server() -> None:
    """The body is never sent: only a refusal made before reading it can answer."""
    app, _, registry = build()
    with LiveServer(app) as server:
        health: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=_probe_health, args=(server.url, stop, health))
        poller.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                start = time.monotonic()
                sock.sendall(
                    b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 40000000\r\n\r\n"
                )
                answer = _answer(sock, timeout=5)
                took = time.monotonic() - start
            time.sleep(0.2)
        finally:
            stop.set()
            poller.join()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"(40000000 bytes) exceeds the server's limit of 1048576 bytes" in answer
    assert took < 2 and health and max(health) < 0.5
    assert statuses(registry)["rejected"] == 1


def test_a_chunked_body_over_the_limit_on_a_real_server() -> None:
    app, _, registry = build(max_body_bytes=LIMIT)
    with LiveServer(app) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # 5 KiB, over the 4 KiB limit, without the last chunk: the server answers and closes.
        sock.sendall((b"400\r\n" + b" " * 1024 + b"\r\n") * 5)
        answer = _answer(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert statuses(registry)["rejected"] == 1
