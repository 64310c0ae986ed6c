"""Throughput of the vLLM engine under ``llmwatch loadgen``, and ``/metrics`` scrape time over HTTP.

Starts ``llmwatch serve --engine vllm`` (the CPU model of ``make model`` by default) on a free
loopback port, waits until ``/health`` answers 200 (the figure ``startup_s``), sends two warm-up
requests, then runs the load generator closed-loop at each ``--concurrency`` level with the same
prompt mix and seed, and finally times ``GET /metrics`` (serving and ``vllm:*`` metrics) with a
real HTTP client. Per level: output tokens per second, requests per second, latency and
time-to-first-token percentiles. The instrumentation overhead per request is measured by
``bench/serving_overhead.py --engine vllm``. Nothing asserts: the script reports.

Usage::

    python bench/serving_vllm.py                             # concurrency 1 and 8, ~5 minutes
    python bench/serving_vllm.py --requests 8 --json var/bench-serving-vllm.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from serving.loadgen import LoadSettings, run_load, summarize

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(args: argparse.Namespace, log: Path) -> Any:
    port = _free_port()
    command = [
        sys.executable, "-m", "llmwatch.cli", "serve", "--engine", "vllm", "--port", str(port),
        "--max-running", str(max(args.concurrency)), "--max-model-len", "2048",
        "--log-level", "warning",
    ]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < 600:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError("the server was not ready within 600 s")


def _scrape(url: str, times: int) -> tuple[float, int]:
    durations, size = [], 0
    with httpx.Client(base_url=url) as client:
        for _ in range(times):
            start = time.perf_counter()
            size = len(client.get("/metrics").content)
            durations.append(time.perf_counter() - start)
    return statistics.median(durations) * 1e3, size


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, drive it, and return the figures."""
    log = Path(tempfile.mkdtemp(prefix="bench-vllm-")) / "serve.log"
    levels: dict[str, Any] = {}
    with _server(args, log) as (proc, url):
        startup = _wait_ready(proc, url, log)
        warm = LoadSettings(url=url, max_requests=2, max_duration_s=120, max_tokens=16)
        asyncio.run(run_load(warm))
        for concurrency in args.concurrency:
            settings = LoadSettings(
                url=url,
                max_requests=args.requests * concurrency,
                max_duration_s=args.max_duration,
                concurrency=concurrency,
                max_tokens=args.max_tokens,
                seed=args.seed,
            )
            results, wall = asyncio.run(run_load(settings))
            levels[str(concurrency)] = summarize(results, wall)
        scrape_ms, size = _scrape(url, args.scrapes)
    return {
        "engine": "vllm",
        "model": args.model or "var/models/SmolLM2-135M-Instruct",
        "max_tokens": args.max_tokens,
        "startup_s": round(startup, 1),
        "levels": levels,
        "metrics_scrape_ms": round(scrape_ms, 3),
        "metrics_bytes": size,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local model folder (default: the CPU model)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="levels (default 1 8)"
    )
    parser.add_argument("--requests", type=int, default=10, help="requests per concurrent client")
    parser.add_argument("--max-tokens", type=int, default=64, help="cap on each answer")
    parser.add_argument("--max-duration", type=float, default=240.0, help="seconds per level")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: the machine is busy (load {os.getloadavg()[0]:.1f}); times are inflated",
            file=sys.stderr,
        )
    result = run(args)
    print(f"vLLM engine ({result['model']}), answers capped at {result['max_tokens']} tokens")
    print(f"  ready after {result['startup_s']:.1f} s")
    for level, s in result["levels"].items():
        lat, ttft = s["latency_s"] or {}, s["ttft_s"] or {}
        print(
            f"  concurrency {level:>2}: {s['output_tokens_per_s']:7.1f} output tokens/s, "
            f"{s['requests_per_s']:.2f} requests/s, latency p50 {lat.get('p50', 0):.2f} s "
            f"p95 {lat.get('p95', 0):.2f} s, ttft p50 {ttft.get('p50', 0):.3f} s, "
            f"outcomes {s['by_outcome']}"
        )
    print(
        f"  /metrics scrape over HTTP: {result['metrics_scrape_ms']:.2f} ms median "
        f"({result['metrics_bytes']} bytes)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
