"""Random and adversarial series: the backtest and the streaming scorer never raise, scores stay
in [0, 1], and a single absurd value's effect is bounded in time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.core.ensemble import Ensemble
from detector.evaluation.backtest import backtest

ROWS = 3 * 288  # three days at 5 minutes: the first model comes after two
IDX = pd.date_range("2026-01-05", periods=ROWS, freq="5min")
SLOW = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, np.nan, np.inf]),
)


@SLOW
@given(
    base=st.sampled_from(["constant", "sine", "noise", "zeros", "ratio"]),
    hits=st.lists(st.tuples(st.integers(0, ROWS - 1), values), max_size=25),
    seed=st.integers(0, 2**16),
)
def test_any_series_backtests_without_raising(base: str, hits, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(ROWS)
    x = {
        "constant": np.full(ROWS, 3.0),
        "sine": 10 + np.sin(2 * np.pi * t / 288),
        "noise": rng.standard_normal(ROWS) * 1e3,
        "zeros": np.zeros(ROWS),
        "ratio": rng.binomial(20, 0.01, ROWS) / 20.0,
    }[base]
    for row, value in hits:
        x[row] = value
    frame = pd.DataFrame({"x": x, "y": np.roll(x, 7)}, index=IDX)
    out = backtest(frame, {"directions": "up"})
    scores = out[["anomaly_score", "x_score", "y_score"]].to_numpy()
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    assert set(np.unique(out.anomalous)) <= {0, 1}


@SLOW
@given(magnitude=st.sampled_from([1e3, 1e6, 1e12, 1e100, 1e308]), seed=st.integers(0, 2**16))
def test_one_absurd_value_costs_minutes_not_hours(magnitude: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=5 * 288, freq="5min")
    t = np.arange(idx.size)
    x = 10 + np.sin(2 * np.pi * t / 288) + 0.1 * rng.standard_normal(idx.size)
    at = 3 * 288 + 100
    x[at] = magnitude
    out = backtest(pd.DataFrame({"x": x}, index=idx))
    assert out.anomalous.iloc[at] == 1
    # The level-shift window (8 rows) holds it at most, then all is quiet: here 40 minutes of
    # 5-minute rows, 8 minutes of one-minute rows (test_backtest.py).
    assert out.anomalous.iloc[at + 9 :].sum() == 0


@SLOW
@given(rows=st.lists(st.tuples(values, values), min_size=1, max_size=40))
def test_the_streaming_scorer_takes_any_rows(rows) -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {"a": 5 + rng.standard_normal(2 * 288), "b": rng.binomial(30, 0.02, 2 * 288) / 30.0},
        index=IDX[: 2 * 288],
    )
    model = Ensemble(directions="up").fit(train)
    frame = pd.DataFrame(rows, columns=["a", "b"], index=IDX[2 * 288 : 2 * 288 + len(rows)])
    out = model.update(frame)
    assert np.isfinite(out.anomaly_score).all() and out.anomaly_score.between(0, 1).all()
