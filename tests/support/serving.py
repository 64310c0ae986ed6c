"""Serving test helpers: an app on the synthetic engine, in process (ASGI) or on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from serving.app import create_app
from serving.config import ServingSettings
from serving.engines.synthetic import SyntheticEngine

__all__ = [
    "SPEED",
    "LiveServer",
    "build",
    "free_port",
    "sample",
    "serve",
    "statuses",
    "vllm_series_in_rules",
]

# Fast enough for tests, slow enough that requests overlap: a 100-token answer takes ~50 ms.
SPEED = 50.0


def build(
    registry: CollectorRegistry | None = None,
    *,
    engine: dict[str, Any] | None = None,
    **settings: Any,
) -> tuple[FastAPI, SyntheticEngine, CollectorRegistry]:
    """An app on a synthetic engine; ``settings`` override :class:`ServingSettings` fields."""
    registry = CollectorRegistry() if registry is None else registry
    config = ServingSettings(engine="synthetic", **settings)
    params = {"speed": SPEED, "max_running": config.max_running, **(engine or {})}
    synthetic = SyntheticEngine(max_model_len=config.max_model_len, **params)
    return create_app(config, synthetic, registry), synthetic, registry


@contextlib.asynccontextmanager
async def serve(
    app: FastAPI, *, wait_ready: bool = True, **client: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield a client talking to it in process."""
    transport = httpx.ASGITransport(app=app, **client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://serving") as http,
    ):
        if wait_ready:
            for _ in range(500):
                if (await http.get("/health")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the engine did not become ready")
        yield http


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``app`` under a real uvicorn server in a background thread (for disconnects)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.02)
        raise AssertionError("the live server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value, 0 when absent."""
    return registry.get_sample_value(name, labels) or 0.0


def statuses(registry: CollectorRegistry, prefix: str = "qwen") -> dict[str, float]:
    """``<prefix>_requests_total`` by status."""
    names = ("success", "error", "timeout", "rejected", "json_parse_error")
    return {s: sample(registry, f"{prefix}_requests_total", status=s) for s in names}


def vllm_series_in_rules(rules: Path | None = None) -> set[str]:
    """Every ``vllm:*`` series name the rule files of ``rules`` (``configs/rules``) read.

    Names as a query spells them, so as an exposition must carry them: a histogram's
    ``_bucket``/``_sum``/``_count`` series, a counter's ``_total``.
    """
    folder = rules or Path(__file__).resolve().parents[2] / "configs" / "rules"
    names: set[str] = set()
    for path in sorted(folder.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                names |= set(re.findall(r"vllm:[A-Za-z0-9_:]+", rule["expr"]))
    return names
