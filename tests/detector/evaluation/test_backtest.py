"""Tests of the causal backtest and its refit schedule."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core.timeutil import seconds
from detector.evaluation.backtest import BacktestSettings, backtest, refit_points

STEP_S = 300.0
FAST = {"families": ("seasonal", "levelshift")}  # no forest: many backtests per test
SMALL = BacktestSettings(
    refit_every=30 * STEP_S, training_window=14 * 86_400.0, min_train_points=20, min_train_span=0
)


def series(n: int, seed: int = 0, *, start: str = "2026-01-05") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=STEP_S))
    rps = 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 1, n)
    return pd.DataFrame({"rps": rps, "latency": 0.3 + 0.01 * rng.normal(size=n)}, index=idx)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    frame = series(160, seed=1)
    frame.iloc[120, 1] = 1.5  # a latency spike well after warm-up
    return frame


@pytest.fixture(scope="module")
def base_result(base: pd.DataFrame) -> pd.DataFrame:
    return backtest(base, FAST, SMALL)


def test_output_columns_and_ranges(base: pd.DataFrame, base_result: pd.DataFrame) -> None:
    assert list(base_result.columns) == ["anomaly_score", "anomalous", "rps_score", "latency_score"]
    assert base_result.index.equals(base.index)
    scores = base_result[["anomaly_score", "rps_score", "latency_score"]].to_numpy()
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert base_result["anomalous"].dtype == np.int8
    assert set(base_result["anomalous"].unique()) <= {0, 1}
    # The overall score is at least every signal's own.
    signal_max = base_result[["rps_score", "latency_score"]].max(axis=1)
    assert (base_result["anomaly_score"] >= signal_max - 1e-12).all()


def test_warm_up_rows_score_zero(base: pd.DataFrame, base_result: pd.DataFrame) -> None:
    first = refit_points(seconds(base.index), SMALL)[0]
    assert first == SMALL.min_train_points
    warm = base_result.iloc[:first]
    assert (warm.to_numpy() == 0).all()
    assert (base_result["anomaly_score"].iloc[first:] > 0).any()


def test_spike_is_found(base_result: pd.DataFrame) -> None:
    assert base_result["latency_score"].iloc[120] > 0.9
    assert base_result["anomaly_score"].iloc[120] > 0.9
    clean = base_result["anomaly_score"].iloc[SMALL.min_train_points : 120]
    assert clean.median() < 0.5


def test_too_short_for_any_model_is_all_warm_up() -> None:
    frame = series(15)
    out = backtest(frame, FAST, SMALL)
    assert len(out) == 15
    assert (out.to_numpy() == 0).all()


def test_unsorted_input_is_scored_in_time_order(base: pd.DataFrame, base_result) -> None:
    shuffled = base.sample(frac=1.0, random_state=0)
    out = backtest(shuffled, FAST, SMALL)
    pd.testing.assert_frame_equal(out, base_result, check_freq=False)


@settings(max_examples=10, deadline=None)
@given(
    keep=st.integers(min_value=1, max_value=159),
    future=st.lists(
        st.one_of(st.floats(min_value=-1e3, max_value=1e3), st.just(float("nan"))),
        min_size=1,
        max_size=40,
    ),
)
def test_appending_future_rows_never_changes_the_past(base: pd.DataFrame, keep, future) -> None:
    past = base.iloc[:keep]
    later = pd.date_range(
        past.index[-1] + pd.Timedelta(seconds=STEP_S), periods=len(future), freq="5min"
    )
    extra = pd.DataFrame({"rps": future, "latency": future[::-1]}, index=later)
    short = backtest(past, FAST, SMALL)
    longer = backtest(pd.concat([past, extra]), FAST, SMALL)
    pd.testing.assert_frame_equal(longer.iloc[:keep], short, check_exact=False, rtol=1e-12)


@pytest.fixture(scope="module")
def full_all_families(base: pd.DataFrame) -> pd.DataFrame:
    return backtest(base.iloc[:140], None, SMALL)


@pytest.mark.parametrize("keep", [70, 121])
def test_causality_with_every_family(base: pd.DataFrame, full_all_families, keep: int) -> None:
    """The forest too: a prefix scores the same as the start of the whole series."""
    full = full_all_families
    prefix = backtest(base.iloc[:keep], None, SMALL)
    pd.testing.assert_frame_equal(full.iloc[:keep], prefix, check_exact=False, rtol=1e-12)


def test_training_window_limits_history() -> None:
    """Rows older than the training window cannot influence later scores."""
    frame = series(200, seed=2)
    settings_ = BacktestSettings(
        refit_every=20 * STEP_S, training_window=60 * STEP_S, min_train_points=20, min_train_span=0
    )
    changed = frame.copy()
    changed.iloc[:10] = 1000.0  # wild values at the very start
    a = backtest(frame, FAST, settings_)
    b = backtest(changed, FAST, settings_)
    late = refit_points(seconds(frame.index), settings_)
    # A model refitted once the wild rows have left the window ...
    clean_from = next(p for p in late if frame.index[p] - frame.index[10] > pd.Timedelta("5h"))
    assert not a.iloc[:clean_from].equals(b.iloc[:clean_from])
    # ... scores exactly as if they had never been there, apart from carried decisions.
    np.testing.assert_allclose(
        a["anomaly_score"].iloc[clean_from:], b["anomaly_score"].iloc[clean_from:]
    )


def test_params_are_passed_to_the_ensemble(base: pd.DataFrame) -> None:
    up = backtest(base, {"directions": "up", **FAST}, SMALL)
    down = backtest(base, {"directions": "down", **FAST}, SMALL)
    assert up["latency_score"].iloc[120] > 0.9
    assert down["latency_score"].iloc[120] < 0.5


# -- refit_points ---------------------------------------------------------------------------


def test_refit_points_doctest_case() -> None:
    settings_ = BacktestSettings(refit_every=300, min_train_points=50, min_train_span=60)
    assert refit_points(np.arange(0.0, 1000.0), settings_) == [60, 120, 240, 480, 780]


def test_refit_points_empty_and_short() -> None:
    assert refit_points(np.array([]), SMALL) == []
    assert refit_points(np.arange(10.0) * STEP_S, SMALL) == []
    assert refit_points(np.arange(21.0) * STEP_S, SMALL) == [20]


def test_min_train_span_delays_the_first_model() -> None:
    t = np.arange(1000.0) * 60.0  # one point a minute
    points = refit_points(t, BacktestSettings(min_train_points=20, min_train_span=3600.0))
    assert points[0] == 60
    assert t[points[0]] - t[0] >= 3600.0
    assert t[points[0] - 1] - t[0] < 3600.0


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=1.0, max_value=3600.0), min_size=0, max_size=300),
    refit_every=st.floats(min_value=60.0, max_value=86_400.0),
    min_points=st.integers(min_value=3, max_value=100),
    min_span=st.floats(min_value=0.0, max_value=20_000.0),
)
def test_refit_points_properties(gaps, refit_every, min_points, min_span) -> None:
    t = np.concatenate([[0.0], np.cumsum(gaps)])
    settings_ = BacktestSettings(
        refit_every=refit_every, min_train_points=min_points, min_train_span=min_span
    )
    points = refit_points(t, settings_)
    assert all(0 < p < t.size for p in points)
    assert points == sorted(set(points))  # strictly increasing
    if points:
        assert points[0] >= min_points
        assert t[points[0]] - t[0] >= min_span or points[0] == min_points
        assert t[points[0] - 1] - t[0] < min_span or points[0] == min_points
    else:  # no model only if the history never becomes long enough
        assert t.size <= min_points or t[-1] - t[0] < min_span
    for prev, nxt in pairwise(points):
        # A model never serves rows later than refit_every after it took over ...
        assert t[nxt - 1] < t[prev] + refit_every
        # ... and is replaced early only while history is short enough to double.
        assert t[nxt] >= t[prev] + refit_every or nxt == 2 * prev
        assert nxt <= 2 * prev
    # The schedule of a prefix is the prefix of the schedule (it is causal too).
    cut = t.size // 2
    assert refit_points(t[:cut], settings_) == [p for p in points if p < cut]


def test_invalid_settings() -> None:
    for kwargs, name in [
        ({"refit_every": 0}, "refit_every"),
        ({"training_window": -1.0}, "training_window"),
        ({"min_train_points": 2}, "min_train_points"),
        ({"min_train_span": float("nan")}, "min_train_span"),
    ]:
        with pytest.raises(ValueError, match=name):
            BacktestSettings(**kwargs)


def test_a_clean_daily_sine_with_a_small_wobble_raises_nothing() -> None:
    """Nearly noise-free: a 0.5 % wobble (73-minute period) on a daily sine is no alarm."""
    idx = pd.date_range("2026-01-05", periods=10 * 1440, freq="60s")
    t = np.arange(idx.size) * 60.0
    x = 10 + np.sin(2 * np.pi * t / 86_400) + 0.05 * np.sin(2 * np.pi * t / (73 * 60))
    out = backtest(pd.DataFrame({"x": x}, index=idx))
    assert out.anomalous.sum() == 0


@pytest.mark.parametrize("absurd", [1e6, 1e308])
def test_one_absurd_value_flags_itself_and_minutes_at_most(absurd: float) -> None:
    """A single 1e6 (or a value near the float limit) in a series of tens: flagged where it is,
    then the refits that learn from it neither blind the series nor raise hours of alarms."""
    idx = pd.date_range("2026-01-05", periods=8 * 1440, freq="60s")
    t = np.arange(idx.size) * 60.0
    rng = np.random.default_rng(0)
    x = 10 + np.sin(2 * np.pi * t / 86_400) + 0.1 * rng.normal(size=idx.size)
    at = 5 * 1440 + 600
    x[at] = absurd
    x[at + 1440] += 2.0  # a day later, an ordinary spike is still seen
    out = backtest(pd.DataFrame({"x": x}, index=idx))
    assert out.anomalous.iloc[at] == 1 and out.anomaly_score.iloc[at] > 0.99
    assert out.anomalous.iloc[at + 15 : at + 1440].sum() == 0
    assert out.anomalous.iloc[at + 1440] == 1
