"""Tests of the stacked seasonal models: all signals scored at once equal each signal alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.core.families.seasonal import SeasonalBaseline
from detector.core.families.seasonal_models import SeasonalFit, StackedModels

DAY_POINTS = 288  # 5-minute steps
START = "2026-01-05"  # a Monday


def seasonal_values(n: int, seed: int, *, level: float = 100.0, amp: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + amp * np.sin(np.arange(n) * 2 * np.pi / DAY_POINTS) + rng.normal(0.0, 3.0, n)


def mixed_frame(n: int) -> pd.DataFrame:
    """Signals of every kind the baseline treats differently: seasonal or not, logged or not."""
    rng = np.random.default_rng(11)
    idx = pd.date_range(START, periods=n, freq="5min")
    columns = {}
    for j in range(24):
        kind = j % 6
        if kind == 0:
            x = seasonal_values(n, seed=j)
        elif kind == 1:
            x = seasonal_values(n, seed=j, level=-20.0)  # negative: "auto" keeps it unlogged
        elif kind == 2:
            x = rng.binomial(200, 0.002, n) / 200.0  # mostly zero
        elif kind == 3:
            x = np.full(n, 7.0)  # flat: no profile
        elif kind == 4:
            x = 5.0 + rng.normal(0.0, 1.0, n)  # noise: no profile
        else:
            x = seasonal_values(n, seed=j, amp=60.0) * np.exp(rng.normal(0.0, 0.05, n))
        columns[f"s{j}"] = x
    frame = pd.DataFrame(columns, index=idx)
    frame.iloc[rng.random(frame.shape) < 0.03] = np.nan
    return frame


def test_many_signals_at_once_equal_each_signal_alone() -> None:
    """Scoring all signals together, a row at a time, gives what each signal's own model gives.

    Many signals and single rows take the vectorised path through the trackers; one signal and
    many rows take the point-by-point one, so this compares the two as well.
    """
    frame = mixed_frame(5 * DAY_POINTS)
    cut = 4 * DAY_POINTS
    train, test = frame.iloc[:cut], frame.iloc[cut:].copy()
    test.iloc[50:55] = np.nan  # a gap in every signal
    test.iloc[100, ::3] *= 4.0
    test.iloc[150:, 1::4] += 30.0  # a lasting shift, accepted as the new level
    # Ratios look for their denominator among the other signals: alone, a ratio has none to find.
    params = {
        "transform": "auto",
        "directions": {"s0": "up", "s1": "down", "s7": "up"},
        "ratios": "none",
    }
    together = SeasonalBaseline(**params).fit(train)
    rows = [together.decompose(test.iloc[i : i + 1], advance=True) for i in range(len(test))]
    for name in frame.columns:
        alone = SeasonalBaseline(**params).fit(train[[name]])
        assert together.seasonality_[name] == alone.seasonality_[name]
        np.testing.assert_array_equal(together.train_scores_[name], alone.train_scores_[name])
        expected = alone.decompose(test[[name]])
        for part in ("z", "expected", "lower", "upper"):
            got = np.concatenate([getattr(row, part)[name].to_numpy() for row in rows])
            want = getattr(expected, part)[name].to_numpy()
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{name} {part}")
        single, mine = alone.models_[name], together.models_[name]
        np.testing.assert_array_equal(single.profile, mine.profile)
        np.testing.assert_array_equal(single.scale, mine.scale)
        assert (single.offset, single.halflife) == pytest.approx(
            (mine.offset, mine.halflife), nan_ok=True
        )
    assert {"daily"} < set(together.seasonality_.values())  # some signals have no profile
    assert np.isfinite(together.stacked_.offset).sum() > 0  # and some are logged


def test_stack_and_back_keeps_every_model() -> None:
    daily = SeasonalFit(
        np.arange(288.0), 86_400.0, np.ones(24), 2 * np.ones(24), "daily", 600.0, 0.5
    )
    weekly = SeasonalFit(
        np.arange(2016.0), 604_800.0, np.ones(24), np.ones(24), "weekly", 60.0, np.nan
    )
    flat = SeasonalFit(np.zeros(0), 0.0, np.ones(24), np.ones(24), "none", 300.0, np.nan)
    models = [daily, flat, weekly, daily]
    stacked = StackedModels.stack(models)
    assert len(stacked.profiles) == 2  # one table per period
    for j, model in enumerate(models):
        back = stacked.model(j)
        np.testing.assert_array_equal(back.profile, model.profile)
        np.testing.assert_array_equal(back.slow_scale, model.slow_scale)
        assert (back.period_s, back.seasonality, back.halflife) == (
            model.period_s,
            model.seasonality,
            model.halflife,
        )
    t = 1.77e9 + np.arange(5) * 3600.0
    x = np.linspace(-0.4, 3.0, 20).reshape(5, 4)
    season, forward = stacked.season(t), stacked.forward(x)
    for j, model in enumerate(models):
        np.testing.assert_array_equal(forward[:, j], model.forward(x[:, j]))
        np.testing.assert_array_equal(
            stacked.backward(forward)[:, j], model.backward(forward[:, j])
        )
    assert (season[:, 1] == 0).all() and np.ptp(season[:, 2]) > 0
