"""``llmwatch demo``: run the whole stack on loopback, inject a fault, show the alert arrive."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from llmwatch.durations import duration_argument

__all__ = ["register"]

_FAULTS = ("latency", "slow_tokens", "errors", "corrupt_json", "memory", "stall")
# Requests/s now, answer length and calibration by engine. The vLLM CPU build with the small
# model answers about 0.25 requests/s of 64 tokens on two cores: a lighter load, and a longer
# calibration, since a minute holds few requests.
_RATE = {"synthetic": 5.0, "vllm": 0.2}
_MAX_TOKENS = {"synthetic": None, "vllm": 32}
_CALIBRATION_S = {"synthetic": 60.0, "vllm": 120.0}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the whole stack on loopback, inject a fault and show the alert it raises",
        description="Start the serving app, a load generator, Prometheus (seeded with days of "
        "history measured from the live traffic), Alertmanager, a webhook receiver and the "
        "detector on 127.0.0.1; after a warm-up inject a fault and show the anomaly being "
        "detected and the alert arriving. Stops after --duration or on Ctrl-C, and leaves no "
        "process behind. State lives in --state-dir (var/demo; `make clean` removes var/).",
    )
    p.add_argument("--engine", choices=["vllm", "synthetic"], default="vllm")
    p.add_argument(
        "--duration", type=duration_argument, default=720.0, help="whole run (default 12m)"
    )
    p.add_argument(
        "--warmup", type=duration_argument, default=60.0, help="clean scoring before the fault"
    )
    p.add_argument("--fault", choices=_FAULTS, default="latency", help="kind (default latency)")
    p.add_argument(
        "--fault-intensity",
        type=float,
        help="seconds (latency), share (errors, corrupt_json), MiB (memory); "
        "default: latency max(8 s, 2 x P95), errors and corrupt_json 0.5",
    )
    p.add_argument("--fault-duration", type=duration_argument, default=180.0, help="default 3m")
    p.add_argument("--rate", type=float, help="requests/s now (default: synthetic 5, vllm 0.2)")
    p.add_argument("--max-tokens", type=int, help="cap on answer length (default: vllm 32)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.25,
        help="factor on every alert `for` and Alertmanager wait (default 0.25; 1 = as deployed)",
    )
    p.add_argument("--calibration", type=duration_argument, help="default: synthetic 60s, vllm 2m")
    p.add_argument("--history-days", type=float, default=4.0, help="seeded history (default 4)")
    p.add_argument("--step", type=duration_argument, default=15.0, help="detector query step (15s)")
    p.add_argument("--scrape-interval", default="5s", help="Prometheus scrape interval (5s)")
    p.add_argument("--state-dir", type=Path, default=Path("var/demo"))
    p.add_argument("--seed", type=int, default=0, help="seed of the load and the history")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from demo.demo import DemoPlan, run_demo
    from demo.launch import StackOptions

    if args.history_days <= 2:
        raise ValueError("--history-days must exceed 2: a daily profile needs two days")
    fault: dict[str, object] = {"kind": args.fault, "duration": args.fault_duration}
    if args.fault_intensity is not None:
        fault["intensity"] = args.fault_intensity
    elif args.fault in ("errors", "corrupt_json"):
        fault["intensity"] = 0.5
    elif args.fault == "memory":
        fault["intensity"] = 1024.0
    options = StackOptions(
        engine=args.engine,
        state_dir=args.state_dir,
        scrape_interval=args.scrape_interval,
        time_scale=args.time_scale,
        step=args.step,
        history_days=args.history_days,
        calibration_s=args.calibration or _CALIBRATION_S[args.engine],
        rate=args.rate if args.rate is not None else _RATE[args.engine],
        max_tokens=args.max_tokens if args.max_tokens is not None else _MAX_TOKENS[args.engine],
        load_duration_s=args.duration + 60.0,
        seed=args.seed,
    )
    plan = DemoPlan(duration_s=args.duration, warmup_s=args.warmup, fault=fault)
    started = time.monotonic()

    def say(line: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - started), 60)
        print(f"[{minutes:02d}:{seconds:02d}] {line}", flush=True)

    say(f"llmwatch demo: {args.engine} engine, {args.duration:g} s; Ctrl-C stops it")
    result = run_demo(options, plan, say)
    if not math.isnan(result.first_alert):
        say(
            f"summary: stack ready {result.ready - result.started:.0f} s after the start; "
            f"first anomaly alert {result.first_alert - result.fault_start:.0f} s after the "
            f"fault, {result.first_alert - result.started:.0f} s after the start; "
            f"{len(result.alerts)} notifications at the webhook (var/demo/alerts.jsonl)"
        )
    elif not result.interrupted:
        print("llmwatch demo: no anomaly alert reached the webhook", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0
