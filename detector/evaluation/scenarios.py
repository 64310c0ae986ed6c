"""Labelled incident scenarios of an LLM inference server, as Prometheus would record them.

Each scenario is a multi-signal frame of recording-rule outputs (P95/P99 latency, TTFT, request
rate, error ratios, GPU memory, tokens per request) at a fixed step, with daily and weekly
seasonality, counting noise and scrape gaps, plus three injected incidents whose intervals are the
labels (each kind of incident is defined in :mod:`detector.evaluation.incidents`). Incidents start
only after day 4 so that detectors have history to learn from. Traffic is as hard as production
gets: nights of 0.3-1 request per second, where one failed request is several percent of a step.
Everything is drawn from ``numpy.random.default_rng`` seeded by the seed, the scenario name, the
strength and the step, so they reproduce a scenario exactly; each scenario draws its own traffic
levels. :func:`corpus_files` lists the evaluation corpus: every kind at both strengths and at
30 s and 60 s steps.

Examples
--------
>>> sc = generate("error_burst", seed=1)
>>> list(sc.frame.columns) == list(SIGNAL_DIRECTIONS)
True
>>> all(sc.frame.index[0] + pd.Timedelta(days=4) <= start < end for start, end in sc.windows)
True
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from detector.core.timeutil import DAY_S
from detector.evaluation.incidents import (
    HOUR_S,
    STRENGTHS,
    Drivers,
    Grid,
    Incident,
    inject_incidents,
    keep_mask,
    latency_log_sd,
)

__all__ = [
    "SCENARIO_NAMES",
    "SCENARIO_STEPS",
    "SIGNAL_DIRECTIONS",
    "STRENGTHS",
    "LabelledIncident",
    "Scenario",
    "corpus_files",
    "generate",
    "write_scenarios",
]

SIGNAL_DIRECTIONS: dict[str, str] = {
    "latency_p95_seconds": "up",
    "latency_p99_seconds": "up",
    "ttft_p95_seconds": "up",
    "requests_per_second": "both",
    "error_ratio": "up",
    "json_error_ratio": "up",
    "gpu_memory_used_mb": "up",
    "tokens_per_request": "up",
    "requests_running": "both",
    "kv_cache_usage_ratio": "up",
}
# The recording rules' evaluation intervals the corpus covers.
SCENARIO_STEPS: tuple[float, ...] = (30.0, 60.0)

_WEEKEND_DAY, _WEEKEND_NIGHT = 0.45, 0.85
# Weekday traffic: nights of well under one request per second, afternoons of 6 to 16.
_NIGHT_RPS, _DAY_RPS = (0.3, 1.0), (6.0, 16.0)
# Request rate at which queueing roughly doubles latency; the busiest peaks sit near 40 % of it.
_CAPACITY_RPS = 40.0
_ERROR_P, _JSON_ERROR_P = 0.002, 0.01
_GPU_PLATEAU_MB = 17_800.0
_GPU_SD_MB = 5.0
# Output lengths are skewed, with a spread of the order of their mean.
_MEAN_TOKENS, _SD_TOKENS = 180.0, 140.0
# Mean end-to-end latency at idle (the P95 is about twice it), prompt length, and the KV cache's
# size in tokens: the busiest afternoons fill a fifth of it.
_MEAN_LATENCY_S, _PROMPT_TOKENS, _KV_TOKENS = 1.1, 450.0, 60_000.0
_NAB_TIME = "%Y-%m-%d %H:%M:%S.%f"

# What each scenario does: the one place that lists the scenarios.
_ABOUT = {
    "latency_regression": "every latency signal x1.2-1.6 for 20-60 min (a slow deploy)",
    "memory_leak": "GPU memory grows by 0.5-1.5 GB over 3-5 h, then drops when the server restarts",
    "traffic_surge": "request rate x1.5-3 for 15-60 min, latency rising with the load",
    "traffic_drop": "request rate down to 20-40 % of normal for 15-60 min",
    "error_burst": "error ratio up by 1.5-6 points for 5-20 min (over a 0.2 % baseline)",
    "json_error_burst": "JSON error ratio from 1 % to 4-8 % for 15-45 min",
    "generation_loops": "tokens per request x1.5-3 (runaway generations), latency with them",
    "latency_up_load_down": "request rate down to 50-85 % while latency rises x1.15-1.5",
    "tokens_up_latency_flat": "tokens per request x1.3-2.5 counted while latency stays flat",
    "kv_cache_leak": "KV cache +3-15 points held for 30-120 min, running requests unchanged",
    "slow_drift": "latency rises to x1.4-1.8 over 3-6 hours, holds 1-3 hours, then reverts",
    "contextual": "traffic normal for another time of day (day-level at night, night-level by day)",
    "quiet_week": "no incident",
}

SCENARIO_NAMES: tuple[str, ...] = tuple(_ABOUT)


@dataclass(frozen=True)
class LabelledIncident:
    """One incident of a scenario: its labelled window, when it became visible, and its size."""

    start: pd.Timestamp
    end: pd.Timestamp
    visible: pd.Timestamp  # first row where the change exceeds three noise deviations
    label: str


@dataclass(frozen=True)
class Scenario:
    """One generated scenario.

    Attributes
    ----------
    name : str
        One of :data:`SCENARIO_NAMES` (the kind of incident).
    frame : pandas.DataFrame
        One float column per signal of :data:`SIGNAL_DIRECTIONS`, indexed by a tz-naive UTC
        ``DatetimeIndex`` named ``timestamp``; scrape gaps are missing rows, and the latency,
        ratio and token signals are missing (NaN) in a step without any request.
    windows : list of (pandas.Timestamp, pandas.Timestamp)
        Labelled incident intervals, both ends inclusive, in time order.
    description : str
        What happens in the scenario, with each incident's time and size.
    strength : str
        ``"small"`` or ``"large"``: which size range the incidents were drawn from.
    step_s : float
        Seconds between rows.
    incidents : tuple of LabelledIncident
        The windows again, with when each became visible and its size.
    """

    name: str
    frame: pd.DataFrame
    windows: list[tuple[pd.Timestamp, pd.Timestamp]]
    description: str
    strength: str = "large"
    step_s: float = 30.0
    incidents: tuple[LabelledIncident, ...] = ()


def _smooth_noise(t: np.ndarray, rng: np.random.Generator, knot_s: float) -> np.ndarray:
    """Unit-scale noise that wanders slowly: independent normals at knots, linearly interpolated."""
    knots = np.arange(0.0, t[-1] + 2 * knot_s, knot_s)
    return np.interp(t, knots, rng.standard_normal(knots.size))


def _base_drivers(g: Grid, rng: np.random.Generator) -> Drivers:
    night_rps, day_rps = rng.uniform(*_NIGHT_RPS), rng.uniform(*_DAY_RPS)
    # Office hours with soft edges (a product of two logistic steps) and a small lunch dip.
    office = 1.0 / ((1.0 + np.exp((8.0 - g.hour) / 0.9)) * (1.0 + np.exp((g.hour - 19.5) / 1.3)))
    lunch = 1.0 - 0.12 * np.exp(-0.5 * ((g.hour - 12.75) / 0.6) ** 2)
    day_level = np.where(g.weekend, _WEEKEND_DAY * day_rps, day_rps)
    night = np.where(g.weekend, _WEEKEND_NIGHT * night_rps, night_rps)
    rate = night + (day_level - night) * office * lunch
    # Real traffic never draws the same curve twice: a level per day and a slow wander within it.
    rate *= np.exp(rng.normal(0.0, 0.06, g.day[-1] + 1))[g.day]
    rate *= np.exp(0.08 * _smooth_noise(g.t, rng, HOUR_S))
    ones = np.ones_like(rate)
    # GPU memory wanders by some megabytes as the allocator's caches fill and empty.
    memory = 8.0 * _smooth_noise(g.t, rng, 3 * HOUR_S)
    return Drivers(
        rate,
        ones.copy(),
        ones.copy(),
        ones * _ERROR_P,
        ones * _JSON_ERROR_P,
        memory,
        ones.copy(),
        np.zeros_like(rate),
        night_rps=night_rps,
        day_rps=day_rps,
        memory_sd_mb=_GPU_SD_MB,
    )


def _observe(g: Grid, d: Drivers, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw what the recording rules would return from the latent drivers."""
    n = g.t.size
    counts = rng.poisson(d.rate * g.step_s)
    rps = counts / g.step_s
    # Longer generations hold batch slots longer and so load the server like extra requests; only
    # partly, as prefill does not grow with them and continuous batching absorbs some decode work.
    load = rps * np.sqrt(d.tokens) / _CAPACITY_RPS
    # Quantiles estimated from few requests (nights, drops) are noisier.
    spread = latency_log_sd(counts / g.step_s, g.step_s)
    p95 = 2.4 * d.latency * d.tokens**0.9 * (1.0 + 0.6 * load**2)
    p95 *= np.exp(spread * rng.standard_normal(n))
    p99 = p95 * (1.2 + rng.gamma(4.0, 0.03, n)) * (1.0 + 0.3 * load**2)
    ttft = 0.32 * d.latency * d.tokens**0.3 * (1.0 + 1.5 * load**2)
    ttft *= np.exp(1.5 * spread * rng.standard_normal(n))
    # Both ratios are over all requests, as the recording rules define them.
    errors = rng.binomial(counts, np.clip(d.error_p, 0.0, 1.0))
    json_errors = rng.binomial(counts, np.clip(d.json_error_p, 0.0, 1.0))
    tokens = _MEAN_TOKENS * d.tokens * np.exp(0.03 * _smooth_noise(g.t, rng, 3 * HOUR_S))
    tokens += _SD_TOKENS * d.tokens * rng.standard_normal(n) / np.sqrt(np.maximum(counts, 1))
    tokens *= d.tokens_seen
    memory = _GPU_PLATEAU_MB + d.memory_mb + rng.normal(0.0, d.memory_sd_mb, n)
    # Requests in flight at the scrape (Little's law), and the KV cache their tokens hold.
    mean_s = (
        _MEAN_LATENCY_S * d.latency * d.tokens**0.9 * (1.0 + 0.6 * (d.rate / _CAPACITY_RPS) ** 2)
    )
    running = rng.poisson(d.rate * mean_s).astype(float)
    held = running * (_PROMPT_TOKENS + 0.5 * _MEAN_TOKENS * d.tokens) / _KV_TOKENS
    kv = np.clip(held * np.exp(0.05 * rng.standard_normal(n)) + d.kv_extra, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = [errors / counts, json_errors / counts]
    columns = (p95, p99, ttft, rps, *ratios, memory, np.maximum(tokens, 1.0), running, kv)
    decimals = (4, 4, 4, 4, 6, 6, 0, 2, 0, 4)
    out = {c: v.round(r) for c, v, r in zip(SIGNAL_DIRECTIONS, columns, decimals, strict=True)}
    # Without a request in the step a quantile or a ratio has no value: the recording rules
    # leave the point out, while the request rate is a real 0.
    for name in ("latency_p95_seconds", "latency_p99_seconds", "ttft_p95_seconds"):
        out[name][counts == 0] = np.nan
    out["tokens_per_request"][counts == 0] = np.nan
    return out


def _grid(start: str, days: float, step_s: float) -> Grid:
    if not (np.isfinite(days) and days > 0 and np.isfinite(step_s) and step_s > 0):
        raise ValueError(f"days and step_s must be positive, got days={days}, step_s={step_s}")
    first = pd.Timestamp(start)
    if first.tz is not None:
        first = first.tz_convert("UTC").tz_localize(None)
    n = round(days * DAY_S / step_s)
    if n < 2:
        raise ValueError(f"days={days} at step_s={step_s} gives fewer than two rows")
    step = pd.Timedelta(seconds=step_s)
    index = pd.date_range(first, periods=n, freq=step, name="timestamp")
    t = np.arange(n) * step_s
    since_midnight = (first - first.normalize()).total_seconds() + t
    hour, day = (since_midnight % DAY_S) / HOUR_S, (since_midnight // DAY_S).astype(int)
    return Grid(index, t, hour, day, np.asarray(index.day_of_week >= 5), float(step_s))


def _span(start: pd.Timestamp, end: pd.Timestamp) -> str:
    until = "%H:%M" if start.normalize() == end.normalize() else "%a %Y-%m-%d %H:%M"
    return f"{start:%a %Y-%m-%d %H:%M}-{end.strftime(until)}"


def _simulate(
    name: str, g: Grid, seed: int, step_s: float, strength: str
) -> tuple[Drivers, list[Incident], pd.DataFrame]:
    """Traffic drivers, injected incidents and the frame of scraped rows."""
    # Each scenario draws its own traffic levels and incidents, so the corpus covers a range.
    tag = zlib.crc32(f"{name}/{strength}/{step_s:g}".encode())
    drivers = _base_drivers(g, np.random.default_rng([seed, 0, tag]))
    rng = np.random.default_rng([seed, 1, tag])
    incidents = inject_incidents(name, g, drivers, rng, strength)
    values = _observe(g, drivers, np.random.default_rng([seed, 2, tag]))
    keep = keep_mask(g, drivers, rng, incidents)
    return drivers, incidents, pd.DataFrame(values, index=g.index)[keep]


def _describe(name: str, drivers: Drivers, labelled: tuple[LabelledIncident, ...]) -> str:
    parts = [f"{_span(i.start, i.end)} {i.label}" for i in labelled]
    traffic = f" (traffic {drivers.night_rps:.2f} req/s at night, {drivers.day_rps:.1f} by day)"
    described = f"; {len(parts)} incident(s): " + "; ".join(parts) if parts else ""
    return f"{name}: {_ABOUT[name]}{traffic}{described}"


def generate(
    name: str,
    *,
    seed: int = 0,
    days: float = 10.0,
    step_s: float = 30.0,
    start: str = "2026-01-05",
    strength: str = "large",
) -> Scenario:
    """Generate one labelled scenario.

    Parameters
    ----------
    name : str
        One of :data:`SCENARIO_NAMES`.
    seed : int, default 0
        Non-negative seed; the same seed, name, strength and step always give the same scenario.
    days : float, default 10.0
        Length of the series. Incidents start after day 4, so all but ``quiet_week`` need more.
    step_s : float, default 30.0
        Seconds between rows (the recording rules' evaluation interval).
    start : str, default "2026-01-05"
        First timestamp (a Monday); a tz-aware value is converted to naive UTC.
    strength : {"small", "large"}, default "large"
        Which size range the incidents are drawn from.

    Returns
    -------
    Scenario
        The frame (scrape gaps as missing rows), the incident windows and a description.

    Raises
    ------
    ValueError
        For an unknown name or strength, non-positive sizes, or a series too short to hold an
        incident.
    """
    if name not in SCENARIO_NAMES:
        raise ValueError(f"unknown scenario {name!r}; valid names: {', '.join(SCENARIO_NAMES)}")
    if strength not in STRENGTHS:
        raise ValueError(f"strength={strength!r} is not allowed; choose one of {list(STRENGTHS)}")
    g = _grid(start, days, step_s)
    drivers, incidents, frame = _simulate(name, g, seed, step_s, strength)
    labelled = tuple(
        LabelledIncident(g.index[i.first], g.index[i.last], g.index[i.visible], i.label)
        for i in incidents
    )
    return Scenario(
        name,
        frame,
        [(i.start, i.end) for i in labelled],
        _describe(name, drivers, labelled),
        strength=strength,
        step_s=float(step_s),
        incidents=labelled,
    )


def corpus_files(names: Iterable[str] | None = None) -> dict[str, tuple[str, str, float]]:
    """The evaluation corpus: file stem -> (scenario name, strength, step in seconds).

    Every kind of incident at both strengths and both steps, and the quiet week at both steps.

    >>> files = corpus_files(["error_burst", "quiet_week"])
    >>> list(files)
    ['error_burst_small_30s', 'error_burst_small_60s', 'error_burst_large_30s', \
'error_burst_large_60s', 'quiet_week_30s', 'quiet_week_60s']
    """
    chosen = SCENARIO_NAMES if names is None else tuple(names)
    unknown = [n for n in chosen if n not in SCENARIO_NAMES]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; valid names: {', '.join(SCENARIO_NAMES)}")
    out: dict[str, tuple[str, str, float]] = {}
    for name in chosen:
        for strength in STRENGTHS if name != "quiet_week" else ("large",):
            for step in SCENARIO_STEPS:
                stem = f"{name}_{strength}" if name != "quiet_week" else name
                out[f"{stem}_{step:g}s"] = (name, strength, step)
    return out


def write_scenarios(
    directory: str | Path, *, seed: int = 0, names: Iterable[str] | None = None
) -> Path:
    """Write the corpus (:func:`corpus_files`) as NAB-style CSV files plus ``labels.json``.

    Parameters
    ----------
    directory : str or pathlib.Path
        Created if missing. Receives ``<stem>.csv`` per scenario (header ``timestamp,<signals...>``,
        timestamps ``YYYY-MM-DD HH:MM:SS`` as in NAB's data files) and ``labels.json``.
    seed : int, default 0
        Passed to :func:`generate`.
    names : iterable of str, optional
        Scenario names to write; all of :data:`SCENARIO_NAMES` by default.

    Returns
    -------
    pathlib.Path
        The labels file, in NAB's ``combined_windows.json`` format:
        ``{"<stem>.csv": [["start", "end"], ...]}``.
    """
    # Checked up front so that a typo leaves no half-written directory.
    files = corpus_files(names)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, list[list[str]]] = {}
    for stem, (name, strength, step) in files.items():
        scenario = generate(name, seed=seed, step_s=step, strength=strength)
        scenario.frame.to_csv(out / f"{stem}.csv", date_format="%Y-%m-%d %H:%M:%S")
        labels[f"{stem}.csv"] = [
            [s.strftime(_NAB_TIME), e.strftime(_NAB_TIME)] for s, e in scenario.windows
        ]
    path = out / "labels.json"
    path.write_text(json.dumps(labels, indent=4) + "\n")
    return path
