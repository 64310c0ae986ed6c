"""Level tracking: robust exponential smoothing whose speed is fitted to the series.

:func:`track_level` runs one signal's tracker point by point; :func:`track_levels` runs one
tracker per signal for many signals, stepping all of them together through each row when that is
cheaper (few rows, many signals), with the same arithmetic and so the same results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

__all__ = ["Track", "Tracks", "best_halflife", "ewma_before", "track_level", "track_levels"]


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


@dataclass
class Tracks:
    """Streaming state of one level tracker per signal, as arrays indexed by signal."""

    level: np.ndarray
    last_t: np.ndarray
    run_sign: np.ndarray
    run_start: np.ndarray
    run_sum: np.ndarray
    run_n: np.ndarray

    @classmethod
    def start(cls, n: int) -> Tracks:
        """``n`` trackers that have seen nothing yet."""
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(nan, nan.copy(), zeros, np.zeros(n), np.zeros(n), zeros.copy())

    def get(self, j: int) -> Track:
        """The state of tracker ``j`` as a :class:`Track`."""
        return Track(
            float(self.level[j]),
            float(self.last_t[j]),
            int(self.run_sign[j]),
            float(self.run_start[j]),
            float(self.run_sum[j]),
            int(self.run_n[j]),
        )

    def put(self, j: int, st: Track) -> None:
        """Store ``st`` as the state of tracker ``j``."""
        self.level[j], self.last_t[j] = st.level, st.last_t
        self.run_sign[j], self.run_start[j] = st.run_sign, st.run_start
        self.run_sum[j], self.run_n[j] = st.run_sum, st.run_n


# Costs that choose how ``track_levels`` runs, in microseconds on the development machine: stepping
# every signal through one row is a fixed number of numpy calls, however many signals there are;
# the point-by-point loop pays a setup per signal, then little per point.
_ROW_US = 55.0
_SIGNAL_US = 30.0
_POINT_US = 0.6


def track_levels(
    t: np.ndarray,
    d: np.ndarray,
    lim: np.ndarray,
    st: Tracks,
    halflife: np.ndarray,
    accept_points: int,
    accept_s: float,
    *,
    by_row: bool | None = None,
) -> np.ndarray:
    """Run one level tracker per column of ``d`` (rows, signals); return the levels, as ``d``.

    Column ``j`` gets exactly what :func:`track_level` gives with ``halflife[j]`` and tracker
    ``j`` of ``st``, which is updated in place. ``by_row`` steps every tracker through each row
    at once; False runs them one after another; None (the default) picks the cheaper way.
    """
    rows, n = d.shape
    if by_row is None:
        by_row = rows * _ROW_US < n * (_SIGNAL_US + rows * _POINT_US)
    if not by_row:
        out = np.empty(d.shape)
        for j in range(n):
            track = st.get(j)
            hl = float(halflife[j])
            out[:, j] = track_level(t, d[:, j], lim[:, j], track, hl, accept_points, accept_s)
            st.put(j, track)
        return out
    out = np.empty(d.shape)
    # The same expression as in ``track_level``, so that the gains agree to the last bit.
    rate = -math.log(2.0) / halflife
    for i, ti in enumerate(t.tolist()):
        out[i] = _step(ti, d[i], lim[i], st, rate, accept_points, accept_s)
    return out


def _step(
    t: float,
    d: np.ndarray,
    lim: np.ndarray,
    st: Tracks,
    rate: np.ndarray,
    accept_points: int,
    accept_s: float,
) -> np.ndarray:
    """Advance every tracker through one row at time ``t``; return the levels it is judged by.

    Each line is one branch of ``track_level``'s loop, taken where its condition holds.
    """
    ok = np.isfinite(d)  # a missing value leaves that tracker waiting
    fresh = ok & np.isnan(st.level)  # a tracker's first value becomes its level
    live = ok & ~fresh
    seen = np.where(ok, np.where(fresh, d, st.level), np.nan)
    gain = -np.expm1(rate * np.maximum(t - st.last_t, 0.0))
    r = d - st.level
    outside = live & ((r > lim) | (r < -lim))
    sign = np.where(r > 0, 1, -1)
    new_run = outside & (sign != st.run_sign)
    run_sign = np.where(new_run, sign, st.run_sign)
    st.run_start = np.where(new_run, t, st.run_start)
    run_sum = np.where(new_run, 0.0, st.run_sum)
    run_sum = np.where(outside, run_sum + d, run_sum)
    run_n = np.where(new_run, 0, st.run_n) + outside
    accept = outside & (run_n >= accept_points) & (t - st.run_start >= accept_s)
    level = np.where(live, st.level + gain * np.where(outside, sign * lim, r), st.level)
    level = np.where(fresh, d, level)
    np.divide(run_sum, run_n, out=level, where=accept)
    reset = accept | (live & ~outside & (r * run_sign < 0))
    st.run_sign = np.where(reset, 0, run_sign)
    st.run_sum = np.where(reset, 0.0, run_sum)
    st.run_n = np.where(reset, 0, run_n)
    st.level = level
    st.last_t = np.where(ok, t, st.last_t)
    return seen
