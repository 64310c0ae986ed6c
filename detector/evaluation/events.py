"""Event-level detection metrics: alarms matched to labelled incident windows.

An SRE is paged per alarm, not per row, so detectors are judged on events: an *alarm* is a maximal
run of consecutive rows whose decision is 1, spanning the times of its first and last row.

* An alarm is *true* if it overlaps ``[window start, window end + grace]`` for some window; the
  grace absorbs the tail of an alarm still on just after the incident ends; others are *false*.
* A window is *detected* if an alarm overlaps ``[start, end]``. Its delay is the time from the
  window's start to the first alarm row inside it, or 0 when an alarm that began before the window
  is still on at its start.
* ``precision = true_alarms / alarms`` (1.0 without alarms), ``recall = detected / windows`` (1.0
  without windows), ``f1`` their harmonic mean (0.0 when both are 0), and false alarms per day over
  the span of the index.

Examples
--------
>>> index = pd.date_range("2026-01-05", periods=240, freq="1min")
>>> decisions = np.zeros(240, dtype=int)
>>> decisions[[30, 31, 100, 101, 102, 200]] = 1
>>> windows = [(index[95], index[120]), (index[150], index[160])]
>>> m = event_metrics(index, decisions, windows, grace=pd.Timedelta("10min"))
>>> (m.alarms, m.true_alarms, m.false_alarms, m.detected, m.delays_s)
(3, 1, 2, 1, (300.0,))
>>> (m.precision, m.recall)
(0.3333333333333333, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["EventMetrics", "combine", "event_metrics"]

_NS_PER_S = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_S
_DEFAULT_GRACE = pd.Timedelta("30min")


@dataclass(frozen=True)
class EventMetrics:
    """Event-level counts of one series (or several pooled with :func:`combine`).

    Attributes
    ----------
    windows, detected : int
        Labelled windows, and those overlapped by an alarm.
    alarms, true_alarms, false_alarms : int
        Alarms (runs of positive decisions), split by whether they overlap a window plus grace.
    delays_s : tuple of float
        Detection delay of each detected window, in seconds.
    days : float
        Span of the evaluated index (last minus first timestamp), in days.
    precision, recall, f1 : float
        ``true_alarms / alarms`` (1.0 without alarms), ``detected / windows`` (1.0 without windows),
        and their harmonic mean (0.0 when both are 0).
    median_delay_s : float
        Median of ``delays_s``; NaN when no window was detected.
    false_alarms_per_day : float
        ``false_alarms / days``; 0.0 without false alarms, infinite if there are some in zero days.
    """

    windows: int
    detected: int
    alarms: int
    true_alarms: int
    false_alarms: int
    delays_s: tuple[float, ...]
    days: float
    precision: float
    recall: float
    f1: float
    median_delay_s: float
    false_alarms_per_day: float


def _summarise(
    *,
    windows: int,
    detected: int,
    alarms: int,
    true_alarms: int,
    delays_s: tuple[float, ...],
    days: float,
) -> EventMetrics:
    """Derive the ratios from the counts, so single and pooled metrics share one definition."""
    precision = true_alarms / alarms if alarms else 1.0
    recall = detected / windows if windows else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false_alarms = alarms - true_alarms
    per_day = false_alarms / days if days > 0 else math.inf if false_alarms else 0.0
    return EventMetrics(
        windows=windows,
        detected=detected,
        alarms=alarms,
        true_alarms=true_alarms,
        false_alarms=false_alarms,
        delays_s=delays_s,
        days=days,
        precision=precision,
        recall=recall,
        f1=f1,
        median_delay_s=float(np.median(delays_s)) if delays_s else math.nan,
        false_alarms_per_day=per_day,
    )


def _nanoseconds(stamps: object, tz: object = None) -> np.ndarray:
    """Timestamps as int64 nanoseconds of naive UTC; naive ones are read in ``tz`` when given."""
    index = pd.DatetimeIndex(stamps)
    if index.tz is None and tz is not None:
        index = index.tz_localize(tz)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def _alarm_runs(on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row of each maximal run of True."""
    edges = np.diff(np.concatenate(([0], on.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def _checked_inputs(
    index: pd.DatetimeIndex | np.ndarray,
    decisions: np.ndarray,
    windows: Sequence[tuple[pd.Timestamp, pd.Timestamp]],
    grace: pd.Timedelta,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Row times, decisions as floats, grace, window starts and ends (ns); ValueError if invalid."""
    times = _nanoseconds(index)
    values = np.asarray(decisions, dtype=float)
    if values.shape != times.shape:
        raise ValueError(f"decisions has shape {values.shape}, index has {times.size} rows")
    if np.any(np.diff(times) < 0):
        raise ValueError("index must be sorted ascending")
    grace_ns = pd.Timedelta(grace).value
    if grace_ns < 0:
        raise ValueError(f"grace must not be negative, got {grace}")
    tz = getattr(index, "tz", None)
    w_start = _nanoseconds([start for start, _ in windows], tz)
    w_end = _nanoseconds([end for _, end in windows], tz)
    if np.any(w_end < w_start):
        raise ValueError("every window must end at or after its start")
    return times, values, grace_ns, w_start, w_end


def _covered_count(n_alarms: int, starts: np.ndarray, stops: np.ndarray) -> int:
    """How many of alarms ``0 .. n_alarms - 1`` fall in some range ``[start, stop)`` of them."""
    # A difference array marks every covered alarm in one pass, however many ranges overlap.
    marks = np.zeros(n_alarms + 1, dtype=np.int64)
    spans = starts < stops
    np.add.at(marks, starts[spans], 1)
    np.add.at(marks, stops[spans], -1)
    return int(np.count_nonzero(np.cumsum(marks[:-1]) > 0))


def event_metrics(
    index: pd.DatetimeIndex | np.ndarray,
    decisions: np.ndarray,
    windows: Sequence[tuple[pd.Timestamp, pd.Timestamp]],
    *,
    grace: pd.Timedelta = _DEFAULT_GRACE,
) -> EventMetrics:
    """Match the alarms of one series to its labelled windows.

    Parameters
    ----------
    index : pandas.DatetimeIndex or numpy.ndarray of datetime64
        Row times, sorted ascending; tz-aware times are compared in UTC.
    decisions : numpy.ndarray
        One 0/1 decision per row; any non-zero value counts as 1 and NaN as 0.
    windows : sequence of (start, end)
        Labelled incident intervals, both ends inclusive; anything ``pandas.Timestamp`` accepts.
        Naive bounds are read in the index's time zone.
    grace : pandas.Timedelta, default 30 minutes
        How long after a window's end an alarm still counts as true.

    Returns
    -------
    EventMetrics

    Raises
    ------
    ValueError
        If lengths differ, the index is not sorted, a window ends before it starts, or ``grace`` is
        negative.
    """
    times, values, grace_ns, w_start, w_end = _checked_inputs(index, decisions, windows, grace)
    first, last = _alarm_runs(np.nan_to_num(values) != 0)
    a_start, a_end = times[first], times[last]
    # Alarms are disjoint and sorted, so both a_start and a_end are sorted: the alarms overlapping
    # [lo, hi] are those from the first one ending at or after lo to the last one starting by hi.
    hit_first = np.searchsorted(a_end, w_start, side="left")
    graced_stop = np.searchsorted(a_start, w_end + grace_ns, side="right")
    # True alarms: those within some window's [start, end + grace].
    true_alarms = _covered_count(a_start.size, hit_first, graced_stop)

    found = hit_first < a_start.size
    found[found] = a_start[hit_first[found]] <= w_end[found]
    delays = np.maximum(a_start[hit_first[found]] - w_start[found], 0) / _NS_PER_S
    return _summarise(
        windows=int(w_start.size),
        detected=int(found.sum()),
        alarms=int(a_start.size),
        true_alarms=true_alarms,
        delays_s=tuple(float(d) for d in delays),
        days=float(times[-1] - times[0]) / _NS_PER_DAY if times.size else 0.0,
    )


def combine(metrics: Iterable[EventMetrics]) -> EventMetrics:
    """Pool metrics of several series: counts and days summed, delays joined, ratios recomputed.

    Parameters
    ----------
    metrics : iterable of EventMetrics

    Returns
    -------
    EventMetrics
        Micro-averaged over the inputs; an empty input gives the metrics of nothing to find and
        no alarm (precision and recall 1.0).

    Examples
    --------
    >>> index = pd.date_range("2026-01-05", periods=3, freq="1D")
    >>> a = event_metrics(index, np.array([0, 1, 0]), [(index[1], index[1])])
    >>> b = event_metrics(index, np.array([1, 0, 0]), [])
    >>> pooled = combine([a, b])
    >>> (pooled.alarms, pooled.true_alarms, pooled.recall, pooled.days, pooled.false_alarms_per_day)
    (2, 1, 1.0, 4.0, 0.25)
    """
    items = list(metrics)
    return _summarise(
        windows=sum(m.windows for m in items),
        detected=sum(m.detected for m in items),
        alarms=sum(m.alarms for m in items),
        true_alarms=sum(m.true_alarms for m in items),
        delays_s=tuple(d for m in items for d in m.delays_s),
        days=float(sum(m.days for m in items)),
    )
