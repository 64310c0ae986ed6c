"""Level tracking: robust exponential smoothing whose speed is fitted to the series."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = ["Track", "best_halflife", "ewma_before", "track_level"]


@dataclass
class Track:
    """Streaming state of one level tracker."""

    level: float = math.nan
    last_t: float = math.nan
    run_sign: int = 0
    run_start: float = 0.0
    run_sum: float = 0.0
    run_n: int = 0


_HALFLIVES = np.array([0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512])


def ewma_before(d: np.ndarray, halflife_points: float) -> np.ndarray:
    """Exponential moving average of the points before each one (the first sees itself)."""
    a = 1.0 - 2.0 ** (-1.0 / max(halflife_points, 1e-9))
    level, _ = lfilter([a], [1.0, a - 1.0], d, zi=[(1.0 - a) * d[0]])
    return np.r_[d[0], level[:-1]]


def best_halflife(d: np.ndarray) -> float:
    """Half-life, in points, of the exponential smoothing with the least one-step absolute error."""
    d = d[np.isfinite(d)]
    if d.size < 16:
        return float(_HALFLIVES[-1])
    errors = []
    for h in _HALFLIVES:
        errors.append(np.mean(np.abs(d[1:] - ewma_before(d, h)[1:])))
    # Prefer the smoother tracker unless a faster one is clearly better (1 % margin).
    best = min(errors)
    return float(max(h for h, e in zip(_HALFLIVES, errors, strict=True) if e <= 1.01 * best))


def track_level(
    t: np.ndarray,
    d: np.ndarray,
    lim: np.ndarray,
    st: Track,
    halflife: float,
    accept_points: int,
    accept_s: float,
) -> np.ndarray:
    """Run a level tracker over ``d``; return the level each row is judged against.

    Huber-clipped exponential smoothing: a residual beyond ``lim`` moves the level by ``lim``
    only, and a run of at least ``accept_points`` such residuals on one side, lasting at least
    ``accept_s`` seconds, becomes the new level. ``st`` is updated in place.
    """
    out = np.full(d.size, np.nan)
    ok = np.flatnonzero(np.isfinite(d))  # a missing value leaves the state waiting
    if ok.size == 0:
        return out
    tf = t[ok]
    prev_t = tf[0] if math.isnan(st.last_t) else st.last_t
    elapsed = np.maximum(np.diff(tf, prepend=prev_t), 0.0)
    gains = (-np.expm1(-math.log(2.0) / halflife * elapsed)).tolist()
    level = st.level
    run_sign, run_start, run_sum, run_n = st.run_sign, st.run_start, st.run_sum, st.run_n
    seen = np.empty(ok.size)
    rows = zip(tf.tolist(), d[ok].tolist(), lim[ok].tolist(), gains, strict=True)
    for i, (ti, di, li, gain) in enumerate(rows):
        if level != level:
            level = seen[i] = di
            continue
        seen[i] = level
        r = di - level
        if r > li or r < -li:
            sign = 1 if r > 0 else -1
            if sign != run_sign:
                run_sign, run_start, run_sum, run_n = sign, ti, 0.0, 0
            run_sum += di
            run_n += 1
            if run_n >= accept_points and ti - run_start >= accept_s:
                level = run_sum / run_n
                run_sign, run_sum, run_n = 0, 0.0, 0
                continue
            r = sign * li
        elif r * run_sign < 0:
            run_sign, run_sum, run_n = 0, 0.0, 0
        level += gain * r
    out[ok] = seen
    st.level, st.last_t = level, float(tf[-1])
    st.run_sign, st.run_start, st.run_sum, st.run_n = run_sign, run_start, run_sum, run_n
    return out
