"""Level tracking: robust exponential smoothing whose speed is fitted to the series.

:func:`track_levels` runs one tracker per signal over a block of rows. Its loop is compiled with
numba: the tracker is sequential by nature (each point moves the level the next is judged by), and
in plain Python it was a quarter of a refit's time, while numpy stepping all signals through each
row pays a fixed cost per row. Compiled, both the long training pass and a streaming row of a
thousand signals are cheap, with IEEE arithmetic as Python's (no fast-math).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
from scipy.signal import lfilter

__all__ = ["Tracks", "best_halflife", "ewma_before", "track_levels"]


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


_STATE = tuple(f.name for f in fields(Tracks))
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


def track_levels(
    t: np.ndarray,
    d: np.ndarray,
    lim: np.ndarray,
    st: Tracks,
    halflife: np.ndarray,
    accept_points: int,
    accept_s: float,
) -> np.ndarray:
    """Run one level tracker per column of ``d`` (rows, signals); return the level of each row.

    Huber-clipped exponential smoothing with ``halflife[j]`` seconds for column ``j``: a
    residual beyond ``lim`` moves the level by ``lim`` only, and a run of at least
    ``accept_points`` such residuals on one side, lasting at least ``accept_s`` seconds, becomes
    the new level. A missing value leaves its tracker waiting (its row gets NaN). ``st`` is
    updated in place, so blocks of rows in turn give what one call over all of them gives.
    Raises :class:`ValueError` when the shapes of the arguments and of ``st`` do not match.
    """
    t = np.ascontiguousarray(t, dtype=np.float64)
    d = np.ascontiguousarray(d, dtype=np.float64)
    lim = np.ascontiguousarray(lim, dtype=np.float64)
    halflife = np.asarray(halflife, dtype=np.float64)
    _check_shapes(t, d, lim, st, halflife)
    out = np.empty(d.shape)
    _compiled()(
        t,
        d,
        lim,
        -math.log(2.0) / halflife,
        st.level,
        st.last_t,
        st.run_sign,
        st.run_start,
        st.run_sum,
        st.run_n,
        int(accept_points),
        float(accept_s),
        out,
    )
    return out


def _check_shapes(
    t: np.ndarray, d: np.ndarray, lim: np.ndarray, st: Tracks, halflife: np.ndarray
) -> None:
    # The compiled loop indexes without bounds checks, and ``st``, ``halflife`` and the scale in
    # ``lim`` come from a model file, which a crafted one could fill with arrays of any length:
    # a mismatch must stop here rather than read or write past an array.
    if d.ndim != 2:
        raise ValueError(f"d must be 2-D (rows, signals), got shape {d.shape}")
    rows, n = d.shape
    if t.shape != (rows,):
        raise ValueError(f"t has shape {t.shape}; d has {rows} rows")
    if lim.shape != d.shape:
        raise ValueError(f"lim has shape {lim.shape}; d has shape {d.shape}")
    named = [("halflife", halflife), *((f"Tracks.{k}", getattr(st, k)) for k in _STATE)]
    for name, array in named:
        if type(array) is not np.ndarray:
            raise ValueError(f"{name} is a {type(array).__name__}, not an array")
        if array.shape != (n,):
            raise ValueError(f"{name} has shape {array.shape}; d has {n} columns")


@functools.cache
def _compiled() -> Callable[..., None]:
    # numba is imported on first use, not with this module: vLLM's CPU worker scans the objects
    # of every loaded module when it starts and fails on llvmlite's, and the worker processes of
    # `llmwatch serve` import the package that holds this module.
    import numba

    return numba.njit(cache=True, nogil=True)(_track)


def _track(
    t: np.ndarray,
    d: np.ndarray,
    lim: np.ndarray,
    rate: np.ndarray,
    level: np.ndarray,
    last_t: np.ndarray,
    run_sign: np.ndarray,
    run_start: np.ndarray,
    run_sum: np.ndarray,
    run_n: np.ndarray,
    points: int,
    span: float,
    out: np.ndarray,
) -> None:
    rows, n = d.shape
    for j in range(n):
        lv, lt, sign_j, start_j = level[j], last_t[j], run_sign[j], run_start[j]
        sum_j, n_j = run_sum[j], run_n[j]
        for i in range(rows):
            di = d[i, j]
            if not math.isfinite(di):
                out[i, j] = math.nan
                continue
            ti = t[i]
            if lv != lv:  # the first value becomes the level
                lv = di
                out[i, j] = di
                lt = ti
                continue
            out[i, j] = lv
            gain = -math.expm1(rate[j] * max(ti - lt, 0.0))
            lt = ti
            r = di - lv
            li = lim[i, j]
            if r > li or r < -li:
                sign = 1 if r > 0 else -1
                if sign != sign_j:
                    sign_j, start_j, sum_j, n_j = sign, ti, 0.0, 0
                sum_j += di
                n_j += 1
                if n_j >= points and ti - start_j >= span:
                    lv = sum_j / n_j
                    sign_j, sum_j, n_j = 0, 0.0, 0
                    continue
                r = sign * li
            elif r * sign_j < 0:
                sign_j, sum_j, n_j = 0, 0.0, 0
            lv += gain * r
        level[j], last_t[j], run_sign[j], run_start[j] = lv, lt, sign_j, start_j
        run_sum[j], run_n[j] = sum_j, n_j
