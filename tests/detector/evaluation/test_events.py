import math

import numpy as np
import pandas as pd
import pytest

from detector.evaluation.events import EventMetrics, combine, event_metrics

INDEX = pd.date_range("2026-01-05", periods=24 * 60, freq="1min")  # one day, one row a minute
NO_GRACE = pd.Timedelta(0)


def _decisions(*runs: tuple[int, int]) -> np.ndarray:
    """Decisions that are 1 on the given inclusive row ranges."""
    out = np.zeros(INDEX.size, dtype=int)
    for first, last in runs:
        out[first : last + 1] = 1
    return out


def _window(first: int, last: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    return INDEX[first], INDEX[last]


def test_alarm_inside_window_is_detected_with_its_delay() -> None:
    m = event_metrics(INDEX, _decisions((110, 130)), [_window(100, 200)])
    assert (m.windows, m.detected, m.alarms, m.true_alarms, m.false_alarms) == (1, 1, 1, 1, 0)
    assert m.delays_s == (600.0,) and m.median_delay_s == 600.0
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert m.days == pytest.approx((24 * 60 - 1) / (24 * 60))
    assert m.false_alarms_per_day == 0.0


def test_alarm_already_on_at_the_window_start_has_no_delay() -> None:
    m = event_metrics(INDEX, _decisions((90, 105)), [_window(100, 200)])
    assert m.detected == 1 and m.delays_s == (0.0,) and m.true_alarms == 1


def test_first_alarm_counts_for_the_delay() -> None:
    m = event_metrics(INDEX, _decisions((150, 152), (120, 125), (300, 310)), [_window(100, 200)])
    assert m.delays_s == (1200.0,)
    assert (m.alarms, m.true_alarms, m.false_alarms) == (3, 2, 1)


def test_grace_makes_a_late_alarm_true_but_does_not_detect() -> None:
    decisions = _decisions((215, 220))
    m = event_metrics(INDEX, decisions, [_window(100, 200)], grace=pd.Timedelta("30min"))
    assert (m.true_alarms, m.false_alarms, m.detected) == (1, 0, 0)
    assert math.isnan(m.median_delay_s) and m.delays_s == ()
    assert (m.precision, m.recall, m.f1) == (1.0, 0.0, 0.0)
    late = event_metrics(INDEX, decisions, [_window(100, 200)], grace=pd.Timedelta("10min"))
    assert (late.true_alarms, late.false_alarms) == (0, 1)
    default = event_metrics(INDEX, _decisions((229, 240)), [_window(100, 200)])
    assert default.true_alarms == 1  # the default grace is 30 minutes: row 229 is 29 min late
    assert event_metrics(INDEX, _decisions((231, 240)), [_window(100, 200)]).true_alarms == 0


def test_window_edges_are_inclusive() -> None:
    at_end = event_metrics(INDEX, _decisions((200, 205)), [_window(100, 200)], grace=NO_GRACE)
    assert (at_end.detected, at_end.true_alarms, at_end.delays_s) == (1, 1, (6000.0,))
    ended = event_metrics(INDEX, _decisions((90, 100)), [_window(100, 200)], grace=NO_GRACE)
    assert (ended.detected, ended.delays_s) == (1, (0.0,))


def test_one_long_alarm_over_two_windows() -> None:
    m = event_metrics(INDEX, _decisions((150, 450)), [_window(100, 200), _window(400, 500)])
    assert (m.alarms, m.true_alarms, m.detected) == (1, 1, 2)
    assert m.delays_s == (3000.0, 0.0) and m.median_delay_s == 1500.0


def test_false_alarms_per_day_and_ratios() -> None:
    decisions = _decisions((0, 3), (500, 510), (700, 700), (INDEX.size - 2, INDEX.size - 1))
    m = event_metrics(INDEX, decisions, [_window(495, 520)])
    assert (m.alarms, m.true_alarms, m.false_alarms) == (4, 1, 3)  # runs at both ends count
    assert m.precision == 0.25 and m.recall == 1.0 and m.f1 == pytest.approx(0.4)
    assert m.false_alarms_per_day == pytest.approx(3 / m.days)


def test_no_alarms_and_no_windows() -> None:
    silent = event_metrics(INDEX, np.zeros(INDEX.size), [_window(10, 20)])
    assert (silent.precision, silent.recall, silent.f1, silent.alarms) == (1.0, 0.0, 0.0, 0)
    quiet = event_metrics(INDEX, _decisions((10, 20)), [])
    assert (quiet.precision, quiet.recall, quiet.f1, quiet.false_alarms) == (0.0, 1.0, 0.0, 1)
    nothing = event_metrics(INDEX, np.zeros(INDEX.size), [])
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 1.0, 1.0)
    empty = event_metrics(INDEX[:0], np.zeros(0), [])
    assert empty.days == 0.0 and empty.false_alarms_per_day == 0.0
    single = event_metrics(INDEX[:1], np.ones(1), [])
    assert single.false_alarms == 1 and single.false_alarms_per_day == math.inf


def test_input_forms() -> None:
    decisions = _decisions((110, 130)).astype(float)
    decisions[50] = np.nan  # unknown counts as no alarm
    windows = [("2026-01-05 01:40", "2026-01-05 03:20")]
    expected = event_metrics(INDEX, _decisions((110, 130)) > 0, [_window(100, 200)])
    assert event_metrics(INDEX.to_numpy(), decisions, windows) == expected
    aware = INDEX.tz_localize("Europe/Berlin")
    as_berlin = event_metrics(aware, decisions, windows)  # naive bounds read in the index's zone
    assert as_berlin == expected
    utc_windows = [(pd.Timestamp("2026-01-05 00:40", tz="UTC"), "2026-01-05 03:20+01:00")]
    assert event_metrics(aware, decisions, utc_windows) == expected


@pytest.mark.parametrize(
    ("index", "decisions", "windows", "grace", "match"),
    [
        (INDEX, np.zeros(10), [], NO_GRACE, "shape"),
        (INDEX[::-1], np.zeros(INDEX.size), [], NO_GRACE, "sorted"),
        (INDEX, np.zeros(INDEX.size), [_window(20, 10)], NO_GRACE, "end at or after"),
        (INDEX, np.zeros(INDEX.size), [], pd.Timedelta("-1min"), "negative"),
    ],
)
def test_invalid_input(index, decisions, windows, grace, match) -> None:
    with pytest.raises(ValueError, match=match):
        event_metrics(index, decisions, windows, grace=grace)


def _brute_force(times: pd.DatetimeIndex, on: np.ndarray, windows, grace) -> tuple:
    """The definitions, row by row."""
    alarms, row = [], 0
    while row < len(on):
        if on[row]:
            last = row
            while last + 1 < len(on) and on[last + 1]:
                last += 1
            alarms.append((times[row], times[last]))
            row = last + 1
        else:
            row += 1
    true = sum(any(a0 <= we + grace and a1 >= ws for ws, we in windows) for a0, a1 in alarms)
    delays = []
    for ws, we in windows:
        if any(a0 < ws <= a1 for a0, a1 in alarms):
            delays.append(0.0)
            continue
        inside = [t for t, flag in zip(times, on, strict=True) if flag and ws <= t <= we]
        if inside:
            delays.append((inside[0] - ws).total_seconds())
    return len(alarms), true, len(delays), tuple(delays)


def test_matches_the_definitions_on_random_series() -> None:
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(1, 120))
        # Irregular spacing with gaps, as scraped series have.
        steps = rng.choice([30, 30, 30, 60, 600], size=n)
        times = pd.Timestamp("2026-01-05") + pd.to_timedelta(np.cumsum(steps), unit="s")
        on = rng.random(n) < rng.uniform(0.05, 0.6)
        span = int(np.cumsum(steps)[-1])
        starts = np.sort(rng.integers(0, span + 1, int(rng.integers(0, 4))))
        windows = [
            (times[0] + pd.Timedelta(seconds=int(s)), times[0] + pd.Timedelta(seconds=int(s + d)))
            for s, d in zip(starts, rng.integers(0, 1800, starts.size), strict=True)
        ]
        grace = pd.Timedelta(seconds=int(rng.choice([0, 60, 1800])))
        m = event_metrics(pd.DatetimeIndex(times), on.astype(int), windows, grace=grace)
        alarms, true, detected, delays = _brute_force(times, on, windows, grace)
        assert (m.alarms, m.true_alarms, m.detected, m.delays_s) == (alarms, true, detected, delays)


def test_combine_pools_counts() -> None:
    a = event_metrics(INDEX, _decisions((110, 130), (900, 905)), [_window(100, 200)])
    b = event_metrics(INDEX, _decisions((310, 320)), [_window(300, 400), _window(600, 700)])
    pooled = combine([a, b])
    assert isinstance(pooled, EventMetrics)
    assert (pooled.windows, pooled.detected, pooled.alarms, pooled.true_alarms) == (3, 2, 3, 2)
    assert pooled.false_alarms == 1 and pooled.delays_s == (600.0, 600.0)
    assert pooled.days == pytest.approx(a.days + b.days)
    assert pooled.precision == pytest.approx(2 / 3) and pooled.recall == pytest.approx(2 / 3)
    assert pooled.false_alarms_per_day == pytest.approx(1 / pooled.days)
    assert combine(iter([a])) == a
    empty = combine([])
    assert (empty.windows, empty.alarms, empty.precision, empty.recall) == (0, 0, 1.0, 1.0)
    assert math.isnan(empty.median_delay_s)
