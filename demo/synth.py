"""Days of history for the recorded signals, at the levels the live stack was measured at.

Each measured series (:class:`~demo.calibrate.SeriesLevel`) becomes a history that
ends where the live data begins and, at the current time of day, has the live level and noise:

- the **request rate** follows the load generator's daily curve
  (:func:`serving.workload.daily_rate_factor`, on the wall-clock UTC hour), scaled so that it
  meets the measured rate now, and so do vLLM's running requests and KV-cache use (Little's law:
  at a steady service time the batch grows with the arrivals); latencies follow the load a
  little (busier hours are slower); ratios, token counts, memory, the queue and the preemption
  rate keep their level;
- the **noise** is Gaussian with the measured spread, averaged over a window as long as the
  recording rules' (one minute), so that neighbouring points are as correlated as live ones
  (vLLM's gauges of the running batch, the queue and the KV cache are read at an instant, so
  their noise is not averaged); it is never below a floor per kind of signal (wider where a
  window holds few requests), and half as large again, since a one-minute calibration can only
  underestimate a spread;
- every series is written twice, as ``llmwatch:<signal>`` and as
  ``llmwatch:signal_value{signal="<signal>"}``, with the labels the live rule produces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from demo.backfill import Series, grid_times
from demo.calibrate import SeriesLevel
from demo.series import SIGNAL_VALUE
from detector.core.timeutil import DAY_S

__all__ = ["LOAD_COUPLING", "history_series", "noise_floor", "utc_hour"]

# How much a signal follows the traffic curve: 1 proportional, 0 flat.
LOAD_COUPLING: dict[str, float] = {
    "requests_per_second": 1.0,
    "requests_running": 1.0,
    "kv_cache_usage_ratio": 1.0,
    "latency_p95_seconds": 0.15,
    "latency_p99_seconds": 0.15,
    "ttft_p95_seconds": 0.15,
    "queue_time_p95_seconds": 0.15,
    "inter_token_latency_p95_seconds": 0.15,
    "prefill_time_p95_seconds": 0.15,
    "decode_time_p95_seconds": 0.15,
}
# Gauges of vLLM's scheduler, read at the scrape: a request stays in them for seconds, far less
# than a step, so neighbouring points share nothing.
_INSTANT: frozenset[str] = frozenset(
    {"requests_running", "requests_waiting", "kv_cache_usage_ratio"}
)
_RULE_WINDOW_S = 60.0
# A minute of calibration sees the noise of a minute: the bursts of a busy host, a slow client
# or a garbage collection over hours are missing from it. Noisier history keeps the detector
# from flagging ordinary live variation; real faults are many times larger.
_SAFETY = 1.5


def utc_hour(t: np.ndarray | float) -> np.ndarray:
    """Hour of the UTC day (0-24, fractional) of unix times."""
    return (np.asarray(t, dtype=np.float64) % DAY_S) / 3600.0


def noise_floor(signal: str, level: float, requests: float | None = None) -> float:
    """The smallest spread a seeded series gets, by kind of signal.

    ``requests`` is how many requests one rule window holds: a statistic of few requests (a
    quantile, a ratio) varies more, by one over its square root.

    >>> noise_floor("error_ratio", 0.0), noise_floor("latency_p95_seconds", 2.0)
    (0.002, 0.16)
    >>> round(noise_floor("latency_p95_seconds", 2.0, requests=10), 3)
    0.632
    >>> noise_floor("requests_running", 9.0), noise_floor("requests_waiting", 0.0)
    (3.0, 0.0)
    """
    few = 1.0 / np.sqrt(requests) if requests else 0.0
    if signal in ("requests_running", "requests_waiting"):
        # How many requests a queue holds at an instant: Poisson.
        return float(np.sqrt(max(level, 0.0)))
    if signal.endswith("_ratio") and signal not in _INSTANT:
        # Binomial: a share of the window's requests (at least one of them).
        share = min(max(level, few**2), 1.0)
        return float(max(0.002, np.sqrt(share * (1.0 - share)) * few))
    if signal.endswith("_per_second"):
        # A Poisson count over the rule's window (requests, preemptions).
        return float(np.sqrt(max(level, 0.0) / _RULE_WINDOW_S))
    if signal.endswith("_seconds"):
        # Latency quantiles are read from histogram buckets, and a busy host slows every
        # request a little: more spread than one quiet minute shows.
        return float(max(0.08, few) * abs(level))
    return float(max(0.03, 0.5 * few) * abs(level))


def _shape(
    signal: str, t: np.ndarray, now: float, rate_factor: Callable[[float], float]
) -> np.ndarray:
    coupling = LOAD_COUPLING.get(signal, 0.0)
    if coupling == 0.0:
        return np.ones_like(t)
    factor = np.vectorize(rate_factor, otypes=[np.float64])(utc_hour(t))
    current = rate_factor(float(utc_hour(now)))
    if coupling == 1.0:
        return factor / current
    return 1.0 + coupling * (factor - current)


def _correlated_noise(
    rng: np.random.Generator, size: int, step: float, window: float = _RULE_WINDOW_S
) -> np.ndarray:
    # A moving average over the rule's window, rescaled to unit variance.
    width = max(1, round(window / step))
    white = rng.normal(size=size + width - 1)
    return np.convolve(white, np.ones(width) / np.sqrt(width), mode="valid")


def history_series(
    levels: Sequence[SeriesLevel],
    *,
    end: float,
    days: float,
    step: float,
    seed: int = 0,
    rate_factor: Callable[[float], float] | None = None,
) -> list[Series]:
    """History of every measured series on the grid ``k * step`` in ``(end - days, end]``.

    Parameters
    ----------
    levels
        The live series, from :func:`~demo.calibrate.measure_levels`.
    end
        Last timestamp of the history: before the live data begins.
    days, step
        Length and spacing (the detector's query step, so it sees every point).
    rate_factor
        The traffic's daily curve, share of the peak rate by UTC hour; default
        :func:`serving.workload.daily_rate_factor`, the load generator's.
    """
    if rate_factor is None:
        from serving.workload import daily_rate_factor

        rate_factor = daily_rate_factor
    if not (days > 0 and step > 0):
        raise ValueError(f"days and step must be positive, got days={days}, step={step}")
    t = grid_times(end - days * DAY_S, end, step)
    t = t[t <= end]
    rng = np.random.default_rng(seed)
    rates = [lv.level for lv in levels if lv.signal == "requests_per_second"]
    requests = sum(rates) * _RULE_WINDOW_S if rates else None
    out = []
    for item in levels:
        floor = noise_floor(item.signal, item.level, requests)
        sigma = _SAFETY * max(item.sigma, floor)
        shape = _shape(item.signal, t, end, rate_factor)
        # A count's spread grows with the square root of its level (Poisson); others keep theirs.
        spread = sigma * (np.sqrt(shape) if LOAD_COUPLING.get(item.signal) == 1.0 else 1.0)
        window = 0.0 if item.signal in _INSTANT else _RULE_WINDOW_S
        values = item.level * shape + spread * _correlated_noise(rng, t.size, step, window)
        upper = 1.0 if item.signal.endswith("_ratio") else np.inf
        values = np.clip(values, 0.0, upper)
        out.append(Series(item.metric, dict(item.labels), t, values))
        out.append(Series(SIGNAL_VALUE, {**item.labels, "signal": item.signal}, t, values))
    return out
