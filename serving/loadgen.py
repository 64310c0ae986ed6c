"""``llmwatch loadgen``: bounded, concurrent chat traffic against an OpenAI-compatible server.

A run stops at whichever bound comes first, ``--max-requests`` or ``--max-duration`` (both
required); requests still running at the deadline are cancelled and reported as ``cancelled``.
Traffic is closed-loop by default (``--concurrency`` clients, each sending its next request when
the previous answer arrived: the server's capacity) or open-loop with Poisson arrivals at
``--rate`` per second, optionally following a daily curve compressed into ``--day-length``
(``--shape daily``). The prompt mix is :mod:`serving.workload`'s.

The summary gives requests by outcome (HTTP status, ``cancelled``, or the transport error),
latency and time-to-first-token percentiles, output tokens per second, and how many JSON answers
parsed (and matched their schema).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serving.workload import ChatRequest, arrival_times, sample_request

__all__ = ["LoadSettings", "RequestResult", "register", "run_load", "summarize"]

_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """One load run (see the module docstring); ``rate`` None means closed-loop."""

    url: str
    max_requests: int
    max_duration_s: float
    concurrency: int = 1
    rate: float | None = None
    day_length_s: float | None = None
    start_hour: float = 0.0
    max_tokens: int | None = None
    temperature: float = 0.7
    stream: bool = True
    model: str | None = None
    seed: int = 0
    request_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {self.max_requests}")
        if not self.max_duration_s > 0:
            raise ValueError(f"max_duration must be > 0, got {self.max_duration_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.day_length_s is not None and (self.rate is None or not self.day_length_s > 0):
            raise ValueError("the daily shape needs a peak rate (--rate) and a day length > 0")


@dataclass
class RequestResult:
    """What happened to one request."""

    kind: str
    outcome: str  # HTTP status code, "cancelled", or the transport error's name
    latency_s: float
    ttft_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    json_ok: bool | None = None  # None: no JSON was asked for
    error: str | None = field(default=None, repr=False)


def _check_json(request: ChatRequest, text: str) -> bool:
    # As a client would: one enclosing Markdown fence is stripped, prose around JSON is not.
    from serving.quality import extract_json

    try:
        value = json.loads(extract_json(text))
    except ValueError:
        return False
    if request.kind == "json_object" and not isinstance(value, dict):
        return False
    schema = request.json_schema
    if schema is None:
        return True
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(value)


async def _read_stream(response: httpx.Response, started: float, result: RequestResult) -> str:
    parts: list[str] = []
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or ""
            if text and result.ttft_s is None:
                result.ttft_s = time.perf_counter() - started
            parts.append(text)
        usage = event.get("usage")
        if usage:
            result.prompt_tokens = usage.get("prompt_tokens", 0)
            result.output_tokens = usage.get("completion_tokens", 0)
    return "".join(parts)


async def _send(client: httpx.AsyncClient, request: ChatRequest, results: list) -> None:
    started = time.perf_counter()
    result = RequestResult(kind=request.kind, outcome="cancelled", latency_s=0.0)
    results.append(result)
    try:
        async with client.stream("POST", "/v1/chat/completions", json=request.body) as response:
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")[:300]
                text = None
            elif request.body.get("stream"):
                text = await _read_stream(response, started, result)
            else:
                body = json.loads(await response.aread())
                text = body["choices"][0]["message"]["content"] or ""
                usage = body.get("usage") or {}
                result.prompt_tokens = usage.get("prompt_tokens", 0)
                result.output_tokens = usage.get("completion_tokens", 0)
            result.outcome = str(response.status_code)
        if text is not None and request.wants_json:
            result.json_ok = _check_json(request, text)
    except httpx.HTTPError as exc:
        result.outcome = type(exc).__name__
        result.error = str(exc)[:300]
    finally:
        # A cancelled request keeps outcome "cancelled"; its latency is how long it ran.
        result.latency_s = time.perf_counter() - started


async def _closed_loop_client(
    client: httpx.AsyncClient,
    next_request: Callable[[], ChatRequest | None],
    results: list[RequestResult],
) -> None:
    while (request := next_request()) is not None:
        await _send(client, request, results)


async def _open_loop(
    client: httpx.AsyncClient,
    settings: LoadSettings,
    next_request: Callable[[], ChatRequest | None],
    results: list[RequestResult],
    start: float,
    deadline: float,
) -> None:
    """Send requests at Poisson arrival times from ``start``, at most ``concurrency`` at once."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(settings.concurrency)
    pending: set[asyncio.Task] = set()
    times = arrival_times(
        random.Random(settings.seed + 1),
        rate=settings.rate or 1.0,
        day_length_s=settings.day_length_s,
        start_hour=settings.start_hour,
    )

    async def one(request: ChatRequest) -> None:
        try:
            await _send(client, request, results)
        finally:
            slots.release()

    try:
        for at in times:
            if start + at >= deadline:
                break
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            # Past the concurrency limit, arrivals wait here (a client-side queue).
            await slots.acquire()
            request = next_request()
            if request is None:
                slots.release()
                break
            task = asyncio.create_task(one(request))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(set(pending))
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _finish_by(work: asyncio.Future[Any], deadline: float) -> None:
    """Await ``work``, cancelling it if it still runs at ``deadline`` (loop time)."""
    # The duration bound holds for requests in flight too: they are cancelled at the deadline.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await work
    if not work.done():
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work


async def run_load(settings: LoadSettings) -> tuple[list[RequestResult], float]:
    """Send the load; return every request's result and the run's wall time in seconds."""
    rng = random.Random(settings.seed)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=None)
    timeout = httpx.Timeout(settings.request_timeout_s, connect=10.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + settings.max_duration_s
    issued = 0

    def next_request() -> ChatRequest | None:
        nonlocal issued
        if issued >= settings.max_requests or loop.time() >= deadline:
            return None
        issued += 1
        return sample_request(
            rng,
            model=settings.model,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            stream=settings.stream,
        )

    async with httpx.AsyncClient(base_url=settings.url, limits=limits, timeout=timeout) as client:
        work: asyncio.Future[Any]
        if settings.rate is None:
            clients = [
                _closed_loop_client(client, next_request, results)
                for _ in range(settings.concurrency)
            ]
            work = asyncio.gather(*clients)
        else:
            work = asyncio.ensure_future(
                _open_loop(client, settings, next_request, results, start, deadline)
            )
        await _finish_by(work, deadline)
    return results, loop.time() - start


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    import numpy as np

    points = np.percentile(np.asarray(values), _PERCENTILES)
    stats = {f"p{p}": round(float(v), 4) for p, v in zip(_PERCENTILES, points, strict=True)}
    stats["mean"] = round(float(np.mean(values)), 4)
    return stats


def summarize(results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    """The run's figures: outcomes, latency and TTFT percentiles (200s only), tokens/s, JSON."""
    ok = [r for r in results if r.outcome == "200"]
    asked = [r for r in ok if r.json_ok is not None]
    output = sum(r.output_tokens for r in ok)
    return {
        "requests": len(results),
        "wall_s": round(wall_s, 3),
        "by_outcome": dict(sorted(Counter(r.outcome for r in results).items())),
        "by_kind": dict(sorted(Counter(r.kind for r in results).items())),
        "latency_s": _percentiles([r.latency_s for r in ok]),
        "ttft_s": _percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        "output_tokens": output,
        "output_tokens_per_s": round(output / wall_s, 3) if wall_s > 0 else 0.0,
        "requests_per_s": round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        "json": {"asked": len(asked), "valid": sum(bool(r.json_ok) for r in asked)},
    }


def _format(summary: dict[str, Any]) -> str:
    lines = [
        f"requests     {summary['requests']} in {summary['wall_s']:.1f} s "
        f"({summary['requests_per_s']:.2f}/s answered)",
        "outcomes     " + ", ".join(f"{k}: {v}" for k, v in summary["by_outcome"].items()),
        "kinds        " + ", ".join(f"{k}: {v}" for k, v in summary["by_kind"].items()),
    ]
    for key, label in (("latency_s", "latency"), ("ttft_s", "ttft")):
        stats = summary[key]
        if stats:
            lines.append(f"{label:<13}" + "  ".join(f"{k} {v:.3f}s" for k, v in stats.items()))
    lines.append(
        f"tokens       {summary['output_tokens']} out, {summary['prompt_tokens']} in, "
        f"{summary['output_tokens_per_s']:.1f} out/s"
    )
    lines.append(f"json         {summary['json']['valid']}/{summary['json']['asked']} valid")
    return "\n".join(lines)


def _settings_from_args(args: argparse.Namespace) -> LoadSettings:
    from llmwatch.durations import parse_duration

    day = parse_duration(args.day_length) if args.shape == "daily" else None
    if args.shape == "daily" and args.rate is None:
        raise ValueError("--shape daily needs --rate (the peak rate)")
    return LoadSettings(
        url=args.url,
        max_requests=args.max_requests,
        max_duration_s=parse_duration(args.max_duration),
        concurrency=args.concurrency,
        rate=args.rate,
        day_length_s=day,
        start_hour=args.start_hour,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        stream=args.stream,
        model=args.model,
        seed=args.seed,
        request_timeout_s=args.request_timeout,
    )


def _run(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    results, wall = asyncio.run(run_load(settings))
    summary = summarize(results, wall)
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    else:
        print(_format(summary))
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``loadgen`` subcommand to the ``llmwatch`` command line."""
    p = sub.add_parser(
        "loadgen",
        help="send bounded, concurrent chat traffic to an OpenAI-compatible server",
        description="Send chat requests (explanations, code, JSON answers, multi-turn chats) "
        "until --max-requests or --max-duration is reached, closed-loop with --concurrency "
        "clients or open-loop at --rate (optionally on a daily curve), and print a summary.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--max-requests", type=int, required=True, help="stop after this many")
    p.add_argument(
        "--max-duration", required=True, metavar="DURATION", help="stop after this long (90s, 5m)"
    )
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight at most")
    p.add_argument("--rate", type=float, help="open loop: requests/s (peak rate when daily)")
    p.add_argument("--shape", choices=["constant", "daily"], default="constant")
    p.add_argument("--day-length", default="10m", help="daily shape: one day lasts this long")
    p.add_argument("--start-hour", type=float, default=0.0, help="daily shape: hour at start")
    p.add_argument("--max-tokens", type=int, help="cap on every answer's length")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--model", help="model field of the requests (default: omitted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt mix and arrivals")
    p.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON ('-': stdout)")
    p.set_defaults(func=_run)
