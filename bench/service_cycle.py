"""Benchmark the detector service: one cycle for 1,000 series, memory, shard coverage.

A real Prometheus (``/usr/bin/prometheus``, temporary data folder) is backfilled with ``--days`` of
synthetic history for ``--series`` series spread over 8 signals; each signal is fitted and
published as ``llmwatch train`` does; then a :class:`~detector.service.loop.DetectorService` loads
the models and runs ``--cycles`` cycles, each on the next minute of data. Figures:

1. one cycle, query excluded (target < 1 s) and included; the excluded part is also shown next to
   the bare ``Ensemble.update`` calls on the same rows in this process (the service's overhead);
2. resident memory of the process with every series' model loaded (target < 1 GiB);
3. ``--shard i/n``: n services, each scoring its share, together cover every series exactly once.

Nothing here asserts; the script prints figures and exits 0.

Usage: ``python bench/service_cycle.py [--series 1000] [--days 2.5] [--cycles 10] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# The real-server helpers of the test suite: the same Prometheus set-up and synthetic history.
# The checkout first, as pytest has it: tests/detector and tests/demo must not shadow the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.history import daily_series, grid_times
from support.servers import PrometheusServer, Series

from detector.registry.store import ModelRegistry
from detector.service.config import DetectorSettings, Shard, SignalSettings, load_settings
from detector.service.history import EventStore
from detector.service.loop import DetectorService
from detector.service.source import PrometheusSource, SeriesBatch
from detector.service.training import train_signal

SIGNALS = ("latency_p95", "latency_p99", "ttft_p95", "rps", "errors", "json_errors", "mem", "tok")
STEP = 60.0


def rss_mib() -> float:
    """Resident memory of this process now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class TimedSource:
    """Delegates to a real source and adds up the time spent in its queries."""

    def __init__(self, inner: PrometheusSource) -> None:
        self.inner = inner
        self.seconds = 0.0

    def fetch(self, signal: SignalSettings, start: float, end: float) -> SeriesBatch:
        began = time.perf_counter()
        try:
            return self.inner.fetch(signal, start, end)
        finally:
            self.seconds += time.perf_counter() - began

    def close(self) -> None:
        self.inner.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def history(n_series: int, end: float, days: float) -> list[Series]:
    t = grid_times(end - days * 86_400, end, STEP)
    per = n_series // len(SIGNALS)
    out = []
    for i, name in enumerate(SIGNALS):
        for k in range(per + (1 if i < n_series % len(SIGNALS) else 0)):
            labels = {"instance": f"node{k // 8}", "gpu": str(k % 8)}
            out.append(
                daily_series(f"bench:{name}", labels, t, base=1.0 + k % 7, seed=1000 * i + k)
            )
    return out


def settings_for(url: str, root: Path, **extra: Any) -> DetectorSettings:
    values: dict[str, Any] = {
        "prometheus": {"url": url, "timeout": 60},
        "interval": STEP,
        "training_window": "30d",
        "min_train_span": "1d",
        "registry_root": root / "models",
        "history_db": root / "history.sqlite",
        "signals": [{"name": s, "query": f"bench:{s}", "step": STEP} for s in SIGNALS],
    }
    values.update(extra)
    return load_settings(None, **values)


def bare_update_seconds(service: DetectorService, rows: dict[str, Any]) -> float:
    """``Ensemble.update`` alone on the rows the last cycle scored (models copied first)."""
    import copy

    total = 0.0
    for name, frame in rows.items():
        model = copy.deepcopy(service.trackers[name].model)
        if model is None or frame is None:
            continue
        x = frame.reindex(columns=model.columns)
        began = time.perf_counter()
        model.ensemble.update(x)
        total += time.perf_counter() - began
    return total


def shard_demo(url: str, root: Path, now: float, n: int, every: set[str]) -> dict[str, Any]:
    owned = []
    for i in range(n):
        # No model for these shards and history too short to fit one: only coverage is shown.
        settings = settings_for(
            url, root / f"shard{i}", shard=f"{i}/{n}", min_train_span="400d", training_window="1h"
        )
        service = DetectorService(settings, clock=Clock(now), executor=ThreadPoolExecutor(1))
        try:
            service.run_cycle()
            service.wait_fits(120)
            owned.append({f"{s.signal}{sorted(s.labels.items())}" for s in service.series()})
        finally:
            service.stop()
    union = [k for keys in owned for k in keys]
    return {
        "n": n,
        "per_shard": [len(k) for k in owned],
        "covered_once": sorted(union) == sorted(every),
    }


def _fit_all(
    settings: DetectorSettings, source: PrometheusSource, registry: ModelRegistry, end: float
) -> float:
    """Fit and publish every signal as ``llmwatch train`` does; the seconds it took."""
    began = time.perf_counter()
    for signal in settings.signals:
        train_signal(settings, signal, source, registry, end=end)
    return time.perf_counter() - began


def _measure_cycles(
    settings: DetectorSettings,
    source: PrometheusSource,
    registry: ModelRegistry,
    start: float,
    cycles: int,
) -> dict[str, Any]:
    """Load the models, run ``cycles`` timed cycles from ``start``; memory and cycle figures."""
    out: dict[str, Any] = {}
    timed = TimedSource(source)
    clock = Clock(start)
    service = DetectorService(
        settings,
        source=timed,
        registry=registry,
        store=EventStore(settings.history_db),
        clock=clock,
        executor=ThreadPoolExecutor(1),
    )
    service.prepare()
    # An upper bound: the fits above ran in this process and left their allocations.
    out["rss_models_loaded_mib"] = rss_mib()
    out["artifacts_mib"] = (
        sum(v.size for s in settings.signals for v in registry.versions(s.name)) / 2**20
    )
    service.run_cycle()  # warm-up: the first pull of each signal
    total, queries, bare = [], [], []
    for _ in range(cycles):
        clock.now += STEP
        timed.seconds = 0.0
        began = time.perf_counter()
        service.run_cycle()
        total.append(time.perf_counter() - began)
        queries.append(timed.seconds)
        last = {n: t.buffer.iloc[-1:] for n, t in service.trackers.items()}
        bare.append(bare_update_seconds(service, last))
    tracked = len(service.series())
    out["rss_after_cycles_mib"] = rss_mib()
    service.stop()
    excluded = [a - b for a, b in zip(total, queries, strict=True)]
    out.update(
        tracked_series=tracked,
        cycle_included_s=statistics.median(total),
        cycle_excluded_s=statistics.median(excluded),
        query_s=statistics.median(queries),
        bare_update_s=statistics.median(bare),
    )
    return out


def _all_series_keys(settings: DetectorSettings, source: PrometheusSource, end: float) -> set[str]:
    """Every series Prometheus has, as the shard replicas key them."""
    batch_keys = set()
    for signal in settings.signals:
        got = source.fetch(signal, end - 600, end)
        batch_keys |= {f"{signal.name}{sorted(v.items())}" for v in got.labels.values()}
    return batch_keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=float, default=2.5)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {"series": args.series, "days": args.days, "cycles": args.cycles}
    rss0 = rss_mib()
    end = float(np.floor(time.time() / STEP) * STEP) - 120
    with tempfile.TemporaryDirectory(prefix="llmwatch-bench-") as tmp:
        root = Path(tmp)
        (root / "prom").mkdir()
        series = history(args.series, end, args.days)
        prom = PrometheusServer(workdir=root / "prom")
        began = time.perf_counter()
        prom.backfill(series)
        out["backfill_s"] = time.perf_counter() - began
        prom.start()
        try:
            settings = settings_for(prom.url, root)
            start = end - (args.cycles + 1) * STEP
            source = PrometheusSource(settings.prometheus)
            registry = ModelRegistry(settings.registry_root)
            out["fit_all_s"] = _fit_all(settings, source, registry, start)
            del series
            out.update(_measure_cycles(settings, source, registry, start, args.cycles))
            out["rss_start_mib"] = rss0
            batch_keys = _all_series_keys(settings, source, end)
            out["shards"] = [shard_demo(prom.url, root, end, n, batch_keys) for n in (2, 3, 4)]
            out["hash_split_10000"] = [
                sum(Shard(i, 4).owns("rps", {"id": str(k)}) for k in range(10_000))
                for i in range(4)
            ]
        finally:
            prom.stop()
    _report(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _report(out: dict[str, Any]) -> None:
    def met(value: float, target: float) -> str:
        return "met" if value <= target else "not met"

    print(f"series scored per cycle: {out['tracked_series']} (of {out['series']})")
    print(f"backfill {out['backfill_s']:.1f} s, fit of every signal {out['fit_all_s']:.1f} s")
    ex, inc = out["cycle_excluded_s"], out["cycle_included_s"]
    print(f"1. cycle excluding the query: {ex * 1000:.0f} ms (target < 1000 ms: {met(ex, 1.0)})")
    query = out["query_s"] * 1000
    print(f"   cycle including the query: {inc * 1000:.0f} ms (queries {query:.0f} ms)")
    bare = out["bare_update_s"]
    print(
        f"   of which Ensemble.update alone: {bare * 1000:.0f} ms "
        f"(service overhead x{ex / bare:.2f})"
    )
    rss = out["rss_models_loaded_mib"]
    print(
        f"2. resident memory, models loaded: {rss:.0f} MiB (target < 1024 MiB: "
        f"{met(rss, 1024)}); model artifacts {out['artifacts_mib']:.1f} MiB; after cycles "
        f"{out['rss_after_cycles_mib']:.0f} MiB; at start {out['rss_start_mib']:.0f} MiB"
    )
    for shard in out["shards"]:
        print(
            f"3. --shard i/{shard['n']}: series per replica {shard['per_shard']}, "
            f"every series exactly once: {shard['covered_once']}"
        )
    print(f"   10,000 label sets over 4 shards: {out['hash_split_10000']}")


if __name__ == "__main__":
    sys.exit(main())
