"""Working without a server: labelled scenario data in place of Prometheus, and which to use.

Every notebook takes a ``SOURCE``: ``"prometheus"`` (the configured or given URL), a CSV or
Parquet path (columns named ``signal{labels}``, as ``llmwatch train --input`` reads), or
``"scenarios"``: every configured signal drawn from a bundled incident scenario
(:mod:`detector.evaluation.scenarios`: daily and weekly seasonality, counting noise, scrape
gaps), shifted so that it ends now with its latest labelled incident an hour ago, which is what
a "last 6 hours" review or a "last day" replay then finds. ``"auto"`` (the default) asks
Prometheus and works offline, saying so, when it does not answer.

vLLM's engine signals that the scenarios have no column for are derived from the serving
columns as an engine behind that traffic would show them (:func:`engine_columns`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from detector.evaluation.scenarios import generate
from detector.service.config import DetectorSettings
from detector.service.source import FileSource, PrometheusSource, Source

__all__ = [
    "DEMO_STACK_FILE",
    "OFFLINE_SCENARIO",
    "OfflineData",
    "demo_stack",
    "engine_columns",
    "offline_data",
    "open_source",
    "repository_path",
    "scenario_frame",
]

OFFLINE_SCENARIO = "latency_regression"
# Scenario column -> configured signal, with the labels its recording rule keeps.
_RENAMED = {"tokens_per_request": "output_tokens_per_request"}
_LABELS = {"gpu_memory_used_mb": '{device="0"}'}
_PROBE_TIMEOUT_S = 3.0
# What the demo stack writes while it runs (demo/): its URLs, config and registry.
DEMO_STACK_FILE = Path("var/demo/stack.json")


def repository_path(relative: str | Path, start: str | Path | None = None) -> Path:
    """``relative`` (``configs/detector.yaml``, ``models``) in the first of ``start`` (default
    the working folder) and the folders above it that has it, else in the checkout this package
    runs from: a notebook finds the repository's files wherever it runs from.
    ``FileNotFoundError`` names what was looked for, and where."""
    here = (Path.cwd() if start is None else Path(start)).resolve()
    checkout = Path(__file__).resolve().parents[2]  # detector/workbench/ -> the checkout
    for folder in (here, *here.parents, checkout):
        if (folder / relative).exists():
            return folder / relative
    raise FileNotFoundError(f"{relative} is not in {here}, the folders above it, or {checkout}")


def demo_stack(start: str | Path | None = None) -> dict[str, Any]:
    """The running demo's ``var/demo/stack.json`` (URLs, config, registry), looked for in
    ``start`` (default the working folder) and the folders above it; ``{}`` when none.

    The notebooks take their defaults from it, so that they meet the demo's detector, config and
    registry rather than the repository's.
    """
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        path = folder / DEMO_STACK_FILE
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                return {}
            return found if isinstance(found, dict) and _alive(found.get("pid")) else {}
    return {}


def _alive(pid: object) -> bool:
    """Whether the demo that wrote the file still runs (a killed one leaves its file behind)."""
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def engine_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """vLLM's signals as an engine behind the scenario's traffic would show them.

    Requests running and the KV cache come from the scenario where it has them; the rest from
    the serving columns: the queue from TTFT, the phases from the latencies, prompts twice the
    answers.
    """
    rps, p95 = frame["requests_per_second"], frame["latency_p95_seconds"]
    ttft, answer = frame["ttft_p95_seconds"], frame["tokens_per_request"]
    running = frame["requests_running"] if "requests_running" in frame else 0.5 * rps * p95
    derived = {
        "requests_running": running,
        "kv_cache_usage_ratio": (running * 3 * answer / 32_768).clip(0.0, 1.0),
        "requests_waiting": (0.1 * running).round(),
        "queue_time_p95_seconds": 0.25 * ttft,
        "preemptions_per_second": 0.002 * rps,
        "inter_token_latency_p95_seconds": 1.2 * (p95 - ttft) / answer,
        "prefill_time_p95_seconds": 0.75 * ttft,
        "decode_time_p95_seconds": p95 - ttft,
        "prompt_tokens_per_request": 2 * answer,
    }
    return {k: v for k, v in derived.items() if k not in frame}


def scenario_frame(
    end: float,
    *,
    scenario: str = OFFLINE_SCENARIO,
    days: float = 10.0,
    step: float = 60.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[tuple[pd.Timestamp, pd.Timestamp, str]]]:
    """A scenario's signals named as configured, ending at ``end`` (unix seconds), and its
    labelled incidents (start, end, what happened) on that clock.

    The scenario is shifted so that its latest incident ends an hour before ``end``; later rows
    would be in the future and are dropped.
    """
    sc = generate(scenario, seed=seed, days=days, step_s=step, strength="large")
    frame = sc.frame.assign(**engine_columns(sc.frame))
    last = sc.incidents[-1].end if sc.incidents else frame.index[-1]
    target = pd.Timestamp(np.floor(end / step) * step - 3600.0, unit="s")
    shift = (target - last).floor(f"{int(step)}s")
    frame.index = frame.index + shift
    frame = frame[frame.index <= pd.Timestamp(end, unit="s")]
    frame = frame.rename(columns=lambda c: _RENAMED.get(c, c) + _LABELS.get(c, ""))
    labels = [(i.start + shift, i.end + shift, i.label) for i in sc.incidents]
    return frame, labels


@dataclass
class OfflineData:
    """A :class:`~detector.service.source.FileSource` over scenario data, and its incidents."""

    source: FileSource
    incidents: list[tuple[pd.Timestamp, pd.Timestamp, str]]

    def incident_table(self) -> pd.DataFrame:
        """The labelled incidents (UTC), oldest first: what a detector should have found."""
        rows = [{"start": s, "end": e, "what": what} for s, e, what in self.incidents]
        table = pd.DataFrame(rows, columns=["start", "end", "what"])
        for column in ("start", "end"):
            table[column] = pd.to_datetime(table[column]).dt.tz_localize("UTC")
        return table


def offline_data(
    settings: DetectorSettings, *, end: float | None = None, seed: int = 0
) -> OfflineData:
    """The bundled scenario at the configured signals' step, ending at ``end`` (default now)."""
    step = min((s.step for s in settings.signals), default=60.0)
    frame, labels = scenario_frame(time.time() if end is None else end, step=step, seed=seed)
    return OfflineData(FileSource(f"<scenario {OFFLINE_SCENARIO}, seed {seed}>", frame), labels)


def _answers(url: str) -> str | None:
    """None when the Prometheus-compatible API at ``url`` answers a query, else why not."""
    try:
        response = httpx.get(
            url.rstrip("/") + "/api/v1/query", params={"query": "1"}, timeout=_PROBE_TIMEOUT_S
        )
        response.raise_for_status()
        response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def open_source(
    settings: DetectorSettings, source: str = "auto", *, seed: int = 0
) -> tuple[Source, OfflineData | None]:
    """The source a notebook reads, and the offline data behind it when it is offline.

    ``source``: ``"auto"``, ``"prometheus"``, ``"scenarios"`` or a CSV/Parquet path (see the
    module docstring). ``"auto"`` prints which one it chose and why.
    """
    url = settings.prometheus.url
    if source in ("auto", "prometheus"):
        why = _answers(url)
        if why is None:
            return PrometheusSource(settings.prometheus), None
        if source == "prometheus":
            raise ConnectionError(
                f"Prometheus at {url} does not answer ({why}); start the stack (`make demo`), "
                "set PROMETHEUS_URL, or SOURCE='scenarios' to work offline"
            )
        print(
            f"Prometheus at {url} does not answer ({why.split(':')[0]}): working offline on the "
            f"bundled '{OFFLINE_SCENARIO}' scenario, ending now. Set SOURCE='prometheus' to "
            "insist, or PROMETHEUS_URL to another server."
        )
        source = "scenarios"
    if source == "scenarios":
        data = offline_data(settings, seed=seed)
        return data.source, data
    return FileSource(source), None
