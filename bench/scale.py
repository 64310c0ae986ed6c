"""How one replica's costs grow with the number of series: the cost model of docs/scaling.md.

For each N of ``--series`` a real VictoriaMetrics (``/usr/bin/victoria-metrics``, temporary data
folder) is fed ``--days`` of synthetic history for N series spread over the 8 signals of
``bench/service_cycle.py`` (three latencies follow the request rate, as the defaults have it).
Then, each in a fresh spawned process so that one phase's memory does not count in the next:

1. **fit**: every signal is fetched, fitted and published as ``llmwatch train`` (and the service's
   fit worker) does, by ``--fit-jobs`` processes side by side (2: one per core, to halve the
   wall time); fetch and fit seconds per signal, and the peak resident memory of a fit process;
2. **serve**: a :class:`~detector.service.loop.DetectorService` loads the models and runs
   ``--cycles`` cycles back to back, each on the next minute (one new row per series); per cycle
   the pull (queries), the scoring (everything else in ``run_cycle``, of which the snapshot for
   readers is shown apart) and the export (``generate_latest`` over the service's collector:
   what a ``/metrics`` scrape renders) are timed; the size of ``/metrics``; resident memory
   before the service exists, with the models loaded and after the cycles;
3. with ``--retrain-at N``: for that N a retrain of every signal is requested (the real spawned
   fit worker) and cycles go on back to back until it has finished: do they slow down?

``--probe-days`` fits one signal of ``--probe-series`` series on in-memory histories of those
lengths (no database), each in a fresh process, to see how a fit grows with the window.

Nothing here asserts. Usage::

    python bench/scale.py --series 1000,10000,50000 --days 2.1 --cycles 5 --json var/scale.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_report import report, slopes
from service_cycle import SIGNALS, STEP, Clock, TimedSource, rss_mib, settings_for
from support.servers import VictoriaMetricsServer

from detector.registry.store import ModelRegistry
from detector.service.history import EventStore
from detector.service.loop import DetectorService
from detector.service.source import PrometheusSource
from detector.service.training import fit_signal_model, train_signal

# Rows served after the fit window ends: cycles (and cycles during a retrain) score these.
SERVED_ROWS = 240
_CHUNK = 2000  # series per import request


def proc_mib(field: str = "VmHWM", pid: str = "self") -> float:
    """A memory figure of a process from ``/proc``: by default its peak resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _labels(k: int) -> dict[str, str]:
    return {"instance": f"node{k // 8}", "gpu": str(k % 8)}


def _lines(n: int, t: np.ndarray) -> Any:
    """JSON lines for VictoriaMetrics' import, ``_CHUNK`` series at a time (as service_cycle's)."""
    stamps = json.dumps((t * 1000).astype(np.int64).tolist())
    phase = 2 * np.pi * ((t % 86_400) / 86_400 - 14 / 24)
    per, extra = divmod(n, len(SIGNALS))
    batch: list[str] = []
    for i, name in enumerate(SIGNALS):
        for k in range(per + (1 if i < extra else 0)):
            rng = np.random.default_rng(1000 * i + k)
            base = 1.0 + k % 7
            values = base + 0.3 * base * np.cos(phase) + 0.03 * base * rng.normal(size=t.size)
            metric = json.dumps({"__name__": f"bench:{name}", **_labels(k)})
            vals = json.dumps(np.round(values, 6).tolist())
            batch.append(f'{{"metric":{metric},"values":{vals},"timestamps":{stamps}}}')
            if len(batch) == _CHUNK:
                yield "\n".join(batch) + "\n"
                batch = []
    if batch:
        yield "\n".join(batch) + "\n"


def feed(vm: VictoriaMetricsServer, n: int, start: float, end: float) -> None:
    """Import the history of ``n`` series and flush it."""
    t = np.arange(np.ceil(start / STEP) * STEP, end + STEP / 2, STEP)
    for body in _lines(n, t):
        req = urllib.request.Request(vm.url + "/api/v1/import", data=body.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=600):
            pass
    with urllib.request.urlopen(vm.url + "/internal/force_flush", timeout=600):
        pass


def fit_phase(url: str, root: str, end: float, names: list[str]) -> dict[str, Any]:
    """Fit and publish ``names`` in this (fresh) process: seconds per signal, peak memory."""
    settings = settings_for(url, Path(root))
    source = TimedSource(PrometheusSource(settings.prometheus))
    registry = ModelRegistry(settings.registry_root)
    out: dict[str, Any] = {"rss_start_mib": rss_mib(), "signals": []}
    for signal in (settings.signal(name) for name in names):
        source.seconds = 0.0
        began = time.perf_counter()
        version = train_signal(settings, signal, source, registry, end=end)
        total = time.perf_counter() - began
        series = int(version.params["series"]) if version is not None else 0
        out["signals"].append(
            {
                "signal": signal.name,
                "series": series,
                "fetch_s": source.seconds,
                "fit_s": total - source.seconds,
                "artifact_bytes": version.size if version else 0,
            }
        )
    out["hwm_mib"] = proc_mib()
    return out


class _Stopwatch:
    """Wraps a callable and adds up the seconds spent in it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


def _families(body: bytes) -> dict[str, int]:
    """Samples per metric name in an exposition text."""
    names: Counter[str] = Counter()
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            names[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    return dict(names)


def _cycle(service: DetectorService, clock: Clock, metrics: Any) -> dict[str, float]:
    """One timed cycle on the next minute, then one timed render of ``/metrics``."""
    from prometheus_client import generate_latest

    timed, publish = service.source, service._publish
    clock.now += STEP
    timed.seconds = publish.seconds = 0.0
    began = time.perf_counter()
    service.run_cycle()
    total = time.perf_counter() - began
    began = time.perf_counter()
    body = generate_latest(metrics)
    export = time.perf_counter() - began
    return {
        "cycle_s": total,
        "pull_s": timed.seconds,
        "score_s": total - timed.seconds,
        "publish_s": publish.seconds,
        "export_s": export,
        "metrics_bytes": len(body),
        "_body": body,
    }


def serve_phase(url: str, root: str, start: float, cycles: int, retrain: bool) -> dict[str, Any]:
    """Load the models and time ``cycles`` cycles (and cycles during a retrain), in this process."""
    from prometheus_client import CollectorRegistry

    from detector.service.exporter import ServiceCollector

    out: dict[str, Any] = {"rss_base_mib": rss_mib()}
    settings = settings_for(url, Path(root))
    clock = Clock(start)
    service = DetectorService(
        settings,
        source=TimedSource(PrometheusSource(settings.prometheus)),
        registry=ModelRegistry(settings.registry_root),
        store=EventStore(settings.history_db),
        clock=clock,
    )  # fits (only the retrain here) go to the real spawned worker process
    service._publish = _Stopwatch(service._publish)  # type: ignore[method-assign]
    metrics = CollectorRegistry(auto_describe=False)
    ServiceCollector(service, metrics, clock=clock)
    began = time.perf_counter()
    service.prepare()
    out["load_s"] = time.perf_counter() - began
    out["rss_loaded_mib"] = rss_mib()
    _cycle(service, clock, metrics)  # warm-up: first pull, first compile
    rows = [_cycle(service, clock, metrics) for _ in range(cycles)]
    body = rows[-1].pop("_body")
    out["tracked_series"] = len(service.series())
    out["families"] = _families(body)
    for key in ("cycle_s", "pull_s", "score_s", "publish_s", "export_s", "metrics_bytes"):
        out[key] = statistics.median(r[key] for r in rows)
    out["rss_after_mib"], out["hwm_mib"] = rss_mib(), proc_mib()
    if retrain:
        out["during_retrain"] = _during_retrain(service, clock, metrics, start)
    service.stop()
    return out


def _during_retrain(
    service: DetectorService, clock: Clock, metrics: Any, start: float
) -> dict[str, Any]:
    """Request a retrain of every signal; cycles back to back until every fit has finished."""
    began = time.perf_counter()
    service.request_retrain()
    rows = []
    while any(service.fits.running(s) for s in SIGNALS):
        if clock.now >= start + (SERVED_ROWS - 1) * STEP:
            time.sleep(0.5)  # no rows left to serve: wait for the fits without cycling
            continue
        rows.append(_cycle(service, clock, metrics))
    fit_s = time.perf_counter() - began
    service.run_cycle()  # installs the new versions
    cycles = [r["cycle_s"] for r in rows]
    return {
        "fit_all_s": fit_s,
        "cycles": len(cycles),
        "cycle_median_s": statistics.median(cycles) if cycles else None,
        "cycle_max_s": max(cycles, default=None),
        "pull_median_s": statistics.median(r["pull_s"] for r in rows) if rows else None,
        "versions": [m.version for m in service.models()],
    }


def probe_phase(series: int, days: float) -> dict[str, Any]:
    """Fit one signal of ``series`` in-memory series of ``days`` (no database); time and memory."""
    import pandas as pd

    from detector.service.config import SignalSettings

    t = np.arange(0.0, days * 86_400, STEP) + 1_767_225_600.0
    phase = 2 * np.pi * ((t % 86_400) / 86_400 - 14 / 24)
    rng = np.random.default_rng(0)
    base = 1.0 + np.arange(series) % 7
    values = base * (1 + 0.3 * np.cos(phase)[:, None] + 0.03 * rng.normal(size=(t.size, series)))
    frame = pd.DataFrame(
        values, index=pd.to_datetime(t, unit="s"), columns=[f'{{gpu="{k}"}}' for k in range(series)]
    )
    rss = rss_mib()
    began = time.perf_counter()
    model = fit_signal_model(frame, SignalSettings(name="mem", query="x"))
    fit_s = time.perf_counter() - began
    bank = model.ensemble.calibrators_
    kept = {}
    for (_, family), size in zip(bank.labels, bank.size, strict=True):
        kept[family] = kept.get(family, 0) + int(size) / series
    return {
        "series": series,
        "days": days,
        "points": t.size,
        "fit_s": fit_s,
        "hwm_mib": proc_mib(),
        "rss_with_data_mib": rss,
        "model_bytes_per_series": len(pickle.dumps(model)) / series,
        "calibrator_values_per_series": kept,
    }


def _fresh(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a new spawned interpreter (its memory figures are its own)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def fit_all(url: str, root: str, end: float, jobs: int) -> dict[str, Any]:
    """Every signal fitted by ``jobs`` fresh processes side by side (signals dealt round-robin)."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=spawn) as pool:
        parts = [
            pool.submit(fit_phase, url, root, end, list(SIGNALS[j::jobs])) for j in range(jobs)
        ]
        done = [p.result() for p in parts]
    order = {name: i for i, name in enumerate(SIGNALS)}
    signals = sorted((s for d in done for s in d["signals"]), key=lambda s: order[s["signal"]])
    return {"jobs": jobs, "signals": signals, "hwm_mib": max(d["hwm_mib"] for d in done)}


def measure(n: int, args: argparse.Namespace, end: float) -> dict[str, Any]:
    """Every figure for ``n`` series, on a VictoriaMetrics of its own."""
    fit_end = end - SERVED_ROWS * STEP
    out: dict[str, Any] = {"series": n}
    with tempfile.TemporaryDirectory(prefix="llmwatch-scale-") as tmp:
        vm = VictoriaMetricsServer(workdir=Path(tmp))
        vm.start()
        try:
            began = time.perf_counter()
            feed(vm, n, fit_end - args.days * 86_400, end)
            out["import_s"] = time.perf_counter() - began
            print(f"  {n}: imported in {out['import_s']:.0f} s", flush=True)
            out["fit"] = fit_all(vm.url, tmp, fit_end, args.fit_jobs)
            pid = str(vm.child.pid) if vm.child is not None else "self"
            out["vm_rss_mib"] = proc_mib("VmRSS", pid)
            print(
                f"  {n}: fitted in {sum(s['fit_s'] for s in out['fit']['signals']):.0f} s",
                flush=True,
            )
            retrain = n in args.retrain_at
            out["serve"] = _fresh(serve_phase, vm.url, tmp, fit_end, args.cycles, retrain)
        finally:
            vm.stop()
    return out


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=_ints, default=[1000, 10000, 50000])
    parser.add_argument("--days", type=float, default=2.1, help="history fitted, days")
    parser.add_argument("--fit-jobs", type=int, default=2, help="fit processes side by side")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--retrain-at", type=_ints, default=[10000])
    parser.add_argument(
        "--probe-days", type=lambda s: [float(x) for x in s.split(",") if x], default=[]
    )
    parser.add_argument("--probe-series", type=int, default=125)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    end = float(np.floor(time.time() / STEP) * STEP) - 120
    out: dict[str, Any] = {
        "argv": sys.argv[1:],
        "days": args.days,
        "cycles": args.cycles,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": [],
    }
    for n in args.series:
        out["runs"].append(measure(n, args, end))
    out["probes"] = [_fresh(probe_phase, args.probe_series, d) for d in args.probe_days]
    out["slopes"] = slopes(out["runs"])
    report(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
