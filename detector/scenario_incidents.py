"""The incidents of the labelled scenarios: what each one does to the traffic model, and when.

:mod:`detector.scenarios` builds a scenario from a latent model of the server (:class:`Drivers`,
one value per row of a :class:`Grid`), lets the scenario's incidents change that model here, then
draws what Prometheus would record from it. Each incident function places up to three
incidents at random after the history period (day 4), well apart, changes the drivers over
their rows and returns them as ``(first row, last row, size as text)``; those rows are the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from detector.timeutil import DAY_S

__all__ = [
    "DAY_RPS",
    "HOUR_S",
    "MINUTE_S",
    "NIGHT_RPS",
    "Drivers",
    "Grid",
    "Incidents",
    "inject_incidents",
]

MINUTE_S, HOUR_S = 60.0, 3_600.0
# Weekday request rates of the base traffic profile, at night and in office hours.
NIGHT_RPS, DAY_RPS = 3.0, 17.5
_HISTORY_DAYS = 4.0
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
    restarts: list[int] = field(default_factory=list)  # rows where a restart's scrape gap begins


# An incident list: (first row, last row, size as text).
Incidents = list[tuple[int, int, str]]


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


# Incidents holding one driver at a new level: driver, duration range (min), size range, how, label.
_STEP_INCIDENTS: dict[str, tuple[str, tuple[float, float], tuple[float, float], str, str]] = {
    "latency_regression": ("latency", (20, 180), (1.4, 2.0), "mul", "latency x{:.2f}"),
    "traffic_surge": ("rate", (10, 120), (2.0, 3.0), "mul", "requests per second x{:.2f}"),
    "traffic_drop": ("rate", (10, 90), (0.1, 0.4), "mul", "requests per second to {:.0%}"),
    "error_burst": ("error_p", (10, 60), (0.03, 0.20), "set", "error ratio {:.1%}"),
    "json_error_burst": ("json_error_p", (10, 120), (0.10, 0.40), "set", "JSON error ratio {:.1%}"),
    "generation_loops": ("tokens", (20, 180), (2.0, 4.0), "mul", "tokens per request x{:.2f}"),
}


def _step_incidents(name: str, g: Grid, d: Drivers, rng: np.random.Generator) -> Incidents:
    driver, (lo_min, hi_min), (lo, hi), how, label = _STEP_INCIDENTS[name]
    k = int(rng.integers(1, 4))
    spans = _place(g, rng, rng.uniform(lo_min * MINUTE_S, hi_min * MINUTE_S, k))
    sizes = rng.uniform(lo, hi, len(spans))
    values = getattr(d, driver)
    for (i0, i1), size in zip(spans, sizes, strict=True):
        values[i0 : i1 + 1] = size * (values[i0 : i1 + 1] if how == "mul" else 1.0)
    return [(i0, i1, label.format(s)) for (i0, i1), s in zip(spans, sizes, strict=True)]


def _memory_leak(g: Grid, d: Drivers, rng: np.random.Generator) -> Incidents:
    k = int(rng.integers(1, 4))
    spans = _place(g, rng, rng.uniform(30 * MINUTE_S, 120 * MINUTE_S, k))
    out: Incidents = []
    for (i0, i1), mb in zip(spans, rng.uniform(1_000.0, 3_000.0, len(spans)), strict=True):
        d.memory_mb[i0 : i1 + 1] = np.linspace(mb / (i1 - i0 + 1), mb, i1 - i0 + 1)
        # The restart frees the leak; the server is not scraped while it reloads the model.
        d.restarts.append(i1 + 1)
        out.append((i0, i1, f"GPU memory +{mb:,.0f} MB"))
    return out


def _slow_drift(g: Grid, d: Drivers, rng: np.random.Generator) -> Incidents:
    k = int(rng.integers(1, 3))
    ramps = rng.uniform(6 * HOUR_S, 12 * HOUR_S, k)
    holds = rng.uniform(6 * HOUR_S, 24 * HOUR_S, k)
    holds[-1] = 2 * HOUR_S  # the last drift is never reverted; leave room to see it settle
    spans = _place(g, rng, ramps + holds)
    sizes = rng.uniform(0.5, 1.0, len(spans))
    out: Incidents = []
    for j, ((i0, i1), size) in enumerate(zip(spans, sizes, strict=True)):
        end = g.t.size - 1 if j == len(spans) - 1 else i1
        ramp = np.clip(np.arange(end - i0 + 1) / (ramps[j] / g.step_s), 0.0, 1.0)
        d.latency[i0 : end + 1] *= 1.0 + size * ramp
        how = "held to the end" if end == g.t.size - 1 else "then reverted"
        out.append((i0, end, f"latency +{size:.0%} over {ramps[j] / HOUR_S:.1f} h, {how}"))
    return out


def _contextual(g: Grid, d: Drivers, rng: np.random.Generator) -> Incidents:
    first = int(np.ceil(_HISTORY_DAYS + g.hour[0] / 24.0))
    days = np.arange(first, g.day[-1] + 1)
    # Calendar days after the history period that still reach past the latest contextual window.
    days = days[(days * 24.0 + 17.0 - g.hour[0]) * HOUR_S <= g.t[-1]]
    if not days.size:
        raise ValueError("series too short: incidents start after day 4 and need room to end")
    k = min(int(rng.integers(1, 4)), days.size)
    chosen = np.sort(rng.choice(days, size=k, replace=False))
    kinds, durs = rng.random(k) < 0.5, rng.uniform(30 * MINUTE_S, 120 * MINUTE_S, k)
    starts_h, levels = rng.uniform(0.0, 1.0, k), rng.uniform(0.85, 1.1, k)
    out: Incidents = []
    for day, busy, dur, u, level in zip(chosen, kinds, durs, starts_h, levels, strict=True):
        midnight = int(np.argmax(g.day == day))
        # Mid-day on a weekend is quiet anyway, so a weekend day gets the busy-night variant.
        busy = bool(busy or g.weekend[midnight])
        hour = 0.5 + 3.0 * u if busy else 10.0 + 4.5 * u
        target = (DAY_RPS if busy else NIGHT_RPS) * level
        i0 = midnight + round((hour - g.hour[midnight]) * HOUR_S / g.step_s)
        i1 = i0 + int(dur / g.step_s)
        d.rate[i0 : i1 + 1] = target
        when = "at night" if busy else "at mid-day"
        out.append((i0, i1, f"requests per second {target:.1f} {when}"))
    return out


_INJECT: dict[str, Callable[[Grid, Drivers, np.random.Generator], Incidents]] = {
    "memory_leak": _memory_leak,
    "slow_drift": _slow_drift,
    "contextual": _contextual,
    "quiet_week": lambda g, d, rng: [],
}


def inject_incidents(name: str, g: Grid, d: Drivers, rng: np.random.Generator) -> Incidents:
    """Apply scenario ``name``'s incidents to the drivers ``d`` (in place) and return them.

    Parameters
    ----------
    name : str
        A scenario name (:data:`detector.scenarios.SCENARIO_NAMES`).
    g : Grid
        The scenario's rows.
    d : Drivers
        The latent model, changed over each incident's rows.
    rng : numpy.random.Generator
        Where the incidents' number, times and sizes are drawn from.

    Returns
    -------
    Incidents
        ``(first row, last row, size as text)`` per incident, in time order.
    """
    inject = _INJECT.get(name) or partial(_step_incidents, name)
    return inject(g, d, rng)
