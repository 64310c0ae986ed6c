"""The incidents of the labelled scenarios: what each one does to the traffic model, and when.

:mod:`detector.evaluation.scenarios` builds a scenario from a latent model of the server
(:class:`Drivers`, one value per row of a :class:`Grid`), lets the scenario's incidents change that
model here, then
draws what Prometheus would record from it. Each incident function places three incidents at
random after the history period (day 4), well apart, changes the drivers over their rows and
returns them as :class:`Incident` records; their rows are the labels.

Sizes come in two strengths, both sized like the incidents an SLO cares about rather than like
outages: ``small`` is near what a careful operator would still want to hear about, ``large`` is
clearly worth a page. Incidents fall at any time of day, nights of well under one request per
second included, so some small ones carry too little evidence for any detector to see; the
sensitivity table of ``llmwatch eval`` shows which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from detector.core.timeutil import DAY_S

__all__ = [
    "HOUR_S",
    "MINUTE_S",
    "STRENGTHS",
    "Drivers",
    "Grid",
    "Incident",
    "inject_incidents",
    "keep_mask",
    "latency_log_sd",
]

MINUTE_S, HOUR_S = 60.0, 3_600.0
STRENGTHS = ("small", "large")
_HISTORY_DAYS = 4.0
_INCIDENTS = 3
# Incidents are kept apart so that each one's grace period and a detector's recovery stay separate.
_INCIDENT_GAP_S = 6 * HOUR_S


@dataclass
class Grid:
    """The rows of a scenario and their wall-clock times."""

    index: pd.DatetimeIndex
    t: np.ndarray  # seconds since the first row
    hour: np.ndarray  # wall-clock hour of day, fractional
    day: np.ndarray  # calendar day number, counted from the first row's day
    weekend: np.ndarray
    step_s: float


@dataclass
class Drivers:
    """Latent state per row that incidents modify before observation noise is drawn."""

    rate: np.ndarray  # expected requests per second
    latency: np.ndarray  # multiplier on every latency signal
    tokens: np.ndarray  # multiplier on output tokens per request
    error_p: np.ndarray
    json_error_p: np.ndarray
    memory_mb: np.ndarray  # added to the GPU memory plateau
    tokens_seen: np.ndarray  # multiplier on the tokens counted only (the server does no more work)
    kv_extra: np.ndarray  # KV-cache share held by no running request (blocks not freed)
    night_rps: float  # the weekday levels of the traffic curve
    day_rps: float
    memory_sd_mb: float  # per-row noise of GPU memory
    restarts: list[int] = field(default_factory=list)  # rows where a restart's scrape gap begins


@dataclass(frozen=True)
class Incident:
    """One injected incident: its rows (both inclusive), a description, and when it shows.

    ``visible`` is the first row at which the change exceeds three standard deviations of the
    affected signal's noise: the start for a step change, later for a ramp (a drift or a leak).
    """

    first: int
    last: int
    label: str
    visible: int


def latency_log_sd(rate: np.ndarray, step_s: float) -> np.ndarray:
    """Standard deviation of log P95 latency per row: quantiles of few requests are noisier."""
    spread = 0.03 + 0.3 / np.sqrt(rate * step_s + 1.0)
    return np.sqrt(spread**2 + 0.04**2)


def _place(
    g: Grid, rng: np.random.Generator, durations_s: np.ndarray, tail_s: float = HOUR_S
) -> list[tuple[int, int]]:
    """Random, time-ordered, separated incident rows after the history period."""
    lo, hi = _HISTORY_DAYS * DAY_S, g.t[-1] - tail_s
    dur = np.asarray(durations_s, dtype=float)
    while dur.size and hi - lo - dur.sum() - _INCIDENT_GAP_S * (dur.size - 1) < 0:
        dur = dur[:-1]
    if not dur.size:
        raise ValueError("series too short: incidents start after day 4 and need room to end")
    free = hi - lo - dur.sum() - _INCIDENT_GAP_S * (dur.size - 1)
    before = np.concatenate(([0.0], np.cumsum(dur[:-1] + _INCIDENT_GAP_S)))
    starts = lo + np.sort(rng.uniform(0.0, free, dur.size)) + before
    first = np.ceil(starts / g.step_s).astype(int)
    last = np.floor((starts + dur) / g.step_s).astype(int)
    return list(zip(first.tolist(), last.tolist(), strict=True))


# Incidents holding one driver at a new level: driver, duration range (min), size range per
# strength, how the size applies, label.
_STEP_INCIDENTS: dict[
    str, tuple[str, tuple[float, float], dict[str, tuple[float, float]], str, str]
] = {
    "latency_regression": (
        "latency",
        (20, 60),
        {"small": (1.2, 1.35), "large": (1.4, 1.6)},
        "mul",
        "latency x{:.2f}",
    ),
    "traffic_surge": (
        "rate",
        (15, 60),
        {"small": (1.5, 2.0), "large": (2.0, 3.0)},
        "mul",
        "requests per second x{:.2f}",
    ),
    "traffic_drop": (
        "rate",
        (15, 60),
        {"small": (0.3, 0.4), "large": (0.2, 0.3)},
        "mul",
        "requests per second to {:.0%}",
    ),
    "error_burst": (
        "error_p",
        (5, 20),
        {"small": (0.015, 0.03), "large": (0.035, 0.06)},
        "add",
        "error ratio +{:.1%}",
    ),
    "json_error_burst": (
        "json_error_p",
        (15, 45),
        {"small": (0.04, 0.055), "large": (0.06, 0.08)},
        "set",
        "JSON error ratio {:.1%}",
    ),
    "tokens_up_latency_flat": (
        "tokens_seen",
        (20, 90),
        {"small": (1.3, 1.6), "large": (1.8, 2.5)},
        "mul",
        "tokens per request x{:.2f}, latency unchanged",
    ),
    "kv_cache_leak": (
        "kv_extra",
        (30, 120),
        {"small": (0.03, 0.06), "large": (0.08, 0.15)},
        "add",
        "KV cache +{:.1%} held, running requests unchanged",
    ),
    "generation_loops": (
        "tokens",
        (20, 90),
        {"small": (1.5, 2.0), "large": (2.0, 3.0)},
        "mul",
        "tokens per request x{:.2f}",
    ),
}


def _step_incidents(
    name: str, g: Grid, d: Drivers, rng: np.random.Generator, strength: str
) -> list[Incident]:
    driver, (lo_min, hi_min), sizes_by, how, label = _STEP_INCIDENTS[name]
    spans = _place(g, rng, rng.uniform(lo_min * MINUTE_S, hi_min * MINUTE_S, _INCIDENTS))
    sizes = rng.uniform(*sizes_by[strength], len(spans))
    values = getattr(d, driver)
    for (i0, i1), size in zip(spans, sizes, strict=True):
        part = values[i0 : i1 + 1]
        values[i0 : i1 + 1] = {"mul": size * part, "add": part + size, "set": size + 0 * part}[how]
    return [Incident(i0, i1, label.format(s), i0) for (i0, i1), s in zip(spans, sizes, strict=True)]


def _latency_up_load_down(
    g: Grid, d: Drivers, rng: np.random.Generator, strength: str
) -> list[Incident]:
    """Fewer requests yet slower ones: a decoupling the load cannot explain."""
    spans = _place(g, rng, rng.uniform(20 * MINUTE_S, 60 * MINUTE_S, _INCIDENTS))
    rate_lo, rate_hi = {"small": (0.7, 0.85), "large": (0.5, 0.7)}[strength]
    slow_lo, slow_hi = {"small": (1.15, 1.3), "large": (1.3, 1.5)}[strength]
    out = []
    for i0, i1 in spans:
        rate, slow = rng.uniform(rate_lo, rate_hi), rng.uniform(slow_lo, slow_hi)
        d.rate[i0 : i1 + 1] *= rate
        d.latency[i0 : i1 + 1] *= slow
        out.append(Incident(i0, i1, f"requests per second x{rate:.2f}, latency x{slow:.2f}", i0))
    return out


def _first_visible(excess: np.ndarray, sd: np.ndarray | float, i0: int) -> int:
    """First row (offset by ``i0``) where a ramp's excess reaches three noise deviations."""
    over = np.flatnonzero(excess >= 3.0 * np.broadcast_to(sd, excess.shape))
    return i0 + int(over[0]) if over.size else i0 + excess.size - 1


def _memory_leak(g: Grid, d: Drivers, rng: np.random.Generator, strength: str) -> list[Incident]:
    ramps = rng.uniform(3 * HOUR_S, 5 * HOUR_S, _INCIDENTS)
    spans = _place(g, rng, ramps)
    low, high = {"small": (500.0, 900.0), "large": (1_000.0, 1_500.0)}[strength]
    out = []
    for (i0, i1), mb in zip(spans, rng.uniform(low, high, len(spans)), strict=True):
        leak = np.linspace(mb / (i1 - i0 + 1), mb, i1 - i0 + 1)
        d.memory_mb[i0 : i1 + 1] += leak
        # The restart frees the leak; the server is not scraped while it reloads the model.
        d.restarts.append(i1 + 1)
        hours = (i1 - i0) * g.step_s / HOUR_S
        visible = _first_visible(leak, d.memory_sd_mb, i0)
        out.append(Incident(i0, i1, f"GPU memory +{mb:,.0f} MB over {hours:.1f} h", visible))
    return out


def _slow_drift(g: Grid, d: Drivers, rng: np.random.Generator, strength: str) -> list[Incident]:
    ramps = rng.uniform(3 * HOUR_S, 6 * HOUR_S, _INCIDENTS)
    holds = rng.uniform(1 * HOUR_S, 3 * HOUR_S, _INCIDENTS)
    spans = _place(g, rng, ramps + holds)
    low, high = {"small": (0.4, 0.55), "large": (0.6, 0.8)}[strength]
    out = []
    for j, ((i0, i1), size) in enumerate(
        zip(spans, rng.uniform(low, high, len(spans)), strict=True)
    ):
        ramp = np.clip(np.arange(i1 - i0 + 1) / (ramps[j] / g.step_s), 0.0, 1.0)
        d.latency[i0 : i1 + 1] *= 1.0 + size * ramp
        sd = latency_log_sd(d.rate[i0 : i1 + 1], g.step_s)
        visible = _first_visible(np.log1p(size * ramp), sd, i0)
        label = f"latency x{1 + size:.2f} over {ramps[j] / HOUR_S:.1f} h, then reverted"
        out.append(Incident(i0, i1, label, visible))
    return out


def _contextual(g: Grid, d: Drivers, rng: np.random.Generator, strength: str) -> list[Incident]:
    first = int(np.ceil(_HISTORY_DAYS + g.hour[0] / 24.0))
    days = np.arange(first, g.day[-1] + 1)
    # Calendar days after the history period that still reach past the latest contextual window.
    days = days[(days * 24.0 + 17.0 - g.hour[0]) * HOUR_S <= g.t[-1]]
    if not days.size:
        raise ValueError("series too short: incidents start after day 4 and need room to end")
    k = min(_INCIDENTS, days.size)
    chosen = np.sort(rng.choice(days, size=k, replace=False))
    kinds, durs = rng.random(k) < 0.5, rng.uniform(30 * MINUTE_S, 120 * MINUTE_S, k)
    starts_h = rng.uniform(0.0, 1.0, k)
    # Busy nights reach this share of the day's level; quiet days fall to this multiple of night.
    busy_share = {"small": (0.5, 0.7), "large": (0.85, 1.1)}[strength]
    quiet_multiple = {"small": (2.0, 3.0), "large": (1.0, 1.5)}[strength]
    out = []
    for day, busy, dur, u in zip(chosen, kinds, durs, starts_h, strict=True):
        midnight = int(np.argmax(g.day == day))
        # Mid-day on a weekend is quiet anyway, so a weekend day gets the busy-night variant.
        busy = bool(busy or g.weekend[midnight])
        hour = 0.5 + 3.0 * u if busy else 10.0 + 4.5 * u
        if busy:
            target = d.day_rps * rng.uniform(*busy_share)
        else:
            target = d.night_rps * rng.uniform(*quiet_multiple)
        i0 = midnight + round((hour - g.hour[midnight]) * HOUR_S / g.step_s)
        i1 = i0 + int(dur / g.step_s)
        d.rate[i0 : i1 + 1] = target
        when = "at night" if busy else "at mid-day"
        out.append(Incident(i0, i1, f"requests per second {target:.1f} {when}", i0))
    return out


_INJECT: dict[str, Callable[[Grid, Drivers, np.random.Generator, str], list[Incident]]] = {
    "memory_leak": _memory_leak,
    "slow_drift": _slow_drift,
    "contextual": _contextual,
    "latency_up_load_down": _latency_up_load_down,
    "quiet_week": lambda g, d, rng, strength: [],
}


def inject_incidents(
    name: str, g: Grid, d: Drivers, rng: np.random.Generator, strength: str
) -> list[Incident]:
    """Apply scenario ``name``'s incidents to the drivers ``d`` (in place) and return them.

    Parameters
    ----------
    name : str
        A scenario name (:data:`detector.evaluation.scenarios.SCENARIO_NAMES`).
    g : Grid
        The scenario's rows.
    d : Drivers
        The latent model, changed over each incident's rows.
    rng : numpy.random.Generator
        Where the incidents' times and sizes are drawn from.
    strength : {"small", "large"}
        Which size range the incidents are drawn from.

    Returns
    -------
    list of Incident
        In time order.
    """
    if strength not in STRENGTHS:
        raise ValueError(f"strength={strength!r} is not allowed; choose one of {list(STRENGTHS)}")
    inject = _INJECT.get(name) or partial(_step_incidents, name)
    return inject(g, d, rng, strength)


def keep_mask(
    g: Grid, d: Drivers, rng: np.random.Generator, incidents: list[Incident]
) -> np.ndarray:
    """Rows that were scraped: a few missing stretches, occasional single misses, restarts."""
    n = g.t.size
    keep = rng.random(n) >= 0.001
    k = max(1, round(int(rng.integers(3, 7)) * n * g.step_s / (10 * DAY_S)))
    starts = rng.integers(0, n, 4 * k)
    lengths = np.ceil(rng.uniform(MINUTE_S, 15 * MINUTE_S, 4 * k) / g.step_s).astype(int)
    # A stretch over an incident would hide what is labelled, so stretches keep clear of them.
    margin = int(30 * MINUTE_S / g.step_s)
    clear = np.ones(starts.size, dtype=bool)
    for inc in incidents:
        clear &= (starts + lengths < inc.first - margin) | (starts > inc.last + margin)
    starts, lengths = starts[clear][:k], lengths[clear][:k]
    restarts = np.asarray(d.restarts, dtype=int)
    starts = np.concatenate((starts, restarts))
    lengths = np.concatenate((lengths, rng.integers(2, 7, restarts.size)))
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = np.repeat(starts, lengths) + offsets
    keep[rows[rows < n]] = False
    keep[[0, -1]] = True  # the series spans its full period
    return keep
