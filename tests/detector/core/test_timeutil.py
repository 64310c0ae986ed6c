"""Tests of the wall-clock helpers: seconds and phases."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from detector.core.timeutil import DAY_S, WEEK_S, phase_lookup, phase_of, seconds

# -- seconds --------------------------------------------------------------------------------


def test_seconds_naive_and_aware() -> None:
    naive = pd.DatetimeIndex(["2026-01-05 00:00:00", "2026-01-05 00:00:30"])
    expected = [1767571200.0, 1767571230.0]
    assert seconds(naive).tolist() == expected
    aware = pd.DatetimeIndex(["2026-01-05 01:00:00", "2026-01-05 01:00:30"]).tz_localize(
        "Europe/Paris"
    )
    assert seconds(aware).tolist() == expected
    assert seconds(naive.as_unit("s")).tolist() == expected  # any resolution
    assert seconds(pd.DatetimeIndex([])).size == 0


def test_seconds_before_the_epoch() -> None:
    assert seconds(pd.DatetimeIndex(["1969-12-31 23:59:00"])).tolist() == [-60.0]


# -- phase_of -------------------------------------------------------------------------------


def test_phase_of_bin_edges() -> None:
    t = np.array([0.0, 3599.999, 3600.0, DAY_S - 1e-6, DAY_S, DAY_S + 3600.0])
    assert phase_of(t, DAY_S, 3600.0).tolist() == [0, 0, 1, 23, 0, 1]


def test_phase_of_before_the_epoch_wraps() -> None:
    assert phase_of(np.array([-1.0, -3600.0, -DAY_S]), DAY_S, 3600.0).tolist() == [23, 23, 0]


def test_weekly_phase_starts_on_monday() -> None:
    monday = seconds(pd.DatetimeIndex(["2026-01-05 00:00", "2026-01-05 00:59", "2026-01-11 23:59"]))
    bins = phase_of(monday, WEEK_S, 3600.0)
    assert bins.tolist() == [0, 0, 167]
    thursday_epoch = phase_of(np.array([0.0]), WEEK_S, DAY_S)
    assert thursday_epoch.tolist() == [3]  # 1970-01-01 was a Thursday


def test_width_that_does_not_divide_the_period() -> None:
    width = 5 * 3600.0  # 4.8 bins a day: rounds to 5, the last one absorbs the rest
    bins = phase_of(np.arange(0.0, DAY_S, 600.0), DAY_S, width)
    assert bins.min() == 0
    assert bins.max() == 4


@settings(max_examples=100, deadline=None)
@given(
    t=hnp.arrays(np.float64, 20, elements=st.floats(-1e10, 1e10)),
    n_bins=st.sampled_from([4, 24, 48, 96, 288]),
)
def test_phase_of_range_and_periodicity(t: np.ndarray, n_bins: int) -> None:
    width = DAY_S / n_bins
    bins = phase_of(t, DAY_S, width)
    assert bins.dtype == np.int64
    assert np.all((bins >= 0) & (bins < n_bins))
    # Shifting by whole days keeps the bin (away from float-rounding at the edges).
    safe = np.abs(np.mod(t, width) - width / 2) < width / 2 - 1e-3
    shifted = phase_of(t + 7 * DAY_S, DAY_S, width)
    np.testing.assert_array_equal(shifted[safe], bins[safe])


# -- phase_lookup ---------------------------------------------------------------------------


def test_phase_lookup_at_centres_and_between() -> None:
    table = np.array([0.0, 10.0, 20.0, 30.0])  # four 6-hour bins
    centres = np.array([3, 9, 15, 21]) * 3600.0
    assert phase_lookup(table, DAY_S, centres).tolist() == table.tolist()
    assert phase_lookup(table, DAY_S, np.array([6 * 3600.0])).tolist() == [5.0]


def test_phase_lookup_wraps_around_midnight() -> None:
    table = np.array([0.0, 10.0, 20.0, 30.0])
    # Midnight lies half-way between the last bin's centre (21h) and the first's (3h).
    assert phase_lookup(table, DAY_S, np.array([0.0, DAY_S])).tolist() == [15.0, 15.0]
    assert phase_lookup(table, DAY_S, np.array([-3 * 3600.0])).tolist() == [30.0]


def test_phase_lookup_single_bin_and_constant_table() -> None:
    assert phase_lookup(np.array([7.0]), DAY_S, np.array([0.0, 1e5])).tolist() == [7.0, 7.0]
    out = phase_lookup(np.full(24, 2.5), DAY_S, np.linspace(-1e6, 1e6, 50))
    np.testing.assert_allclose(out, 2.5)


def test_phase_lookup_weekly_origin() -> None:
    table = np.arange(7.0)  # one bin per weekday, Monday first
    noon = seconds(pd.DatetimeIndex(["2026-01-05 12:00", "2026-01-07 12:00", "2026-01-11 12:00"]))
    assert phase_lookup(table, WEEK_S, noon).tolist() == [0.0, 2.0, 6.0]


@settings(max_examples=100, deadline=None)
@given(
    table=hnp.arrays(np.float64, st.integers(1, 48), elements=st.floats(-1e3, 1e3)),
    t=hnp.arrays(np.float64, 10, elements=st.floats(-1e9, 1e9)),
)
def test_phase_lookup_interpolates_within_table_and_is_periodic(table, t) -> None:
    out = phase_lookup(table, DAY_S, t)
    assert np.all(np.isfinite(out))
    assert np.all(out >= table.min() - 1e-9) and np.all(out <= table.max() + 1e-9)
    again = phase_lookup(table, DAY_S, t + DAY_S)
    np.testing.assert_allclose(again, out, atol=1e-6 * (1 + np.abs(table).max()))
