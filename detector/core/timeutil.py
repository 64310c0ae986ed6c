"""Wall-clock time helpers: seconds since the epoch and phases within a day or a week."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["DAY_S", "WEEK_S", "phase_lookup", "phase_of", "seconds"]

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
# 1970-01-05 was a Monday: weekly phases start on Monday 00:00 UTC.
_WEEK_ORIGIN_S = 4 * DAY_S


def seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Seconds since the Unix epoch (UTC) as float64.

    >>> seconds(pd.DatetimeIndex(["1970-01-01 00:01:00"])).tolist()
    [60.0]
    """
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.as_unit("ns").asi8.astype(np.float64) / 1e9


def _phase(t: np.ndarray, period: float) -> np.ndarray:
    origin = _WEEK_ORIGIN_S if period == WEEK_S else 0.0
    return np.mod(np.asarray(t, dtype=np.float64) - origin, period)


def phase_of(t: np.ndarray, period: float, width: float) -> np.ndarray:
    """Index of the wall-clock bin of ``width`` seconds, within ``period``, that holds each time.

    >>> phase_of(np.array([0.0, 3599.0, 3600.0, 86400.0]), DAY_S, 3600.0).tolist()
    [0, 0, 1, 0]
    """
    n_bins = round(period / width)
    return np.minimum((_phase(t, period) // width).astype(np.int64), n_bins - 1)


def phase_lookup(table: np.ndarray, period: float, t: np.ndarray) -> np.ndarray:
    """Value of a per-bin table at each time, interpolated linearly between bin centres (cyclic).

    A 2-D table holds one row of bins per series and gives one row of values per series.

    >>> phase_lookup(np.array([0.0, 1.0]), DAY_S, np.array([21600.0, 43200.0])).tolist()
    [0.0, 0.5]
    """
    n = table.shape[-1]
    pos = _phase(t, period) / (period / n) - 0.5
    lower = np.floor(pos)
    frac = pos - lower
    i0 = lower.astype(np.int64) % n
    return table[..., i0] * (1.0 - frac) + table[..., (i0 + 1) % n] * frac
