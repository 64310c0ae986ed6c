"""Tests of the seasonal baseline's choice of seasonality and of its fallbacks on hard series.

Mostly-zero ratios, flat, short and noise-only series must not be over-read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.seasonal import DAY_POINTS, START, seasonal_frame

from detector.core.ensemble import Ensemble
from detector.core.families.seasonal import SeasonalBaseline


@pytest.fixture(scope="module")
def ratio_frame() -> pd.DataFrame:
    """Error ratio from small binomial counts: about two thirds of the rows are exactly 0."""
    rng = np.random.default_rng(3)
    n = 5 * DAY_POINTS
    idx = pd.date_range(START, periods=n, freq="5min")
    return pd.DataFrame({"err": rng.binomial(200, 0.002, n) / 200.0}, index=idx)


@pytest.mark.parametrize("transform", ["auto", "none"])
def test_mostly_zero_ratio_noise_is_not_huge(ratio_frame: pd.DataFrame, transform: str) -> None:
    train, test = ratio_frame.iloc[: 4 * DAY_POINTS], ratio_frame.iloc[4 * DAY_POINTS :]
    values = train["err"].to_numpy()
    assert np.median(np.abs(values - np.median(values))) == 0  # the MAD-zero case
    model = SeasonalBaseline(directions="up", transform=transform).fit(train)
    assert np.all(model.models_["err"].scale > 0)
    clean = model.score(test)["err"]
    assert np.isfinite(clean.to_numpy()).all()
    # Ordinary noise (a few more errors than usual) scores like the training noise did, not like
    # a zero scale would make it (1e4 and more).
    train_max = model.train_scores_["err"].max()
    assert 0 < train_max < 50
    assert clean.max() < 2 * train_max
    burst = test.copy()
    burst.iloc[100, 0] = 0.3  # 60 errors out of 200
    # The log transform compresses a burst, yet it still tops everything the noise produced.
    factor = 3.0 if transform == "none" else 1.0
    assert model.score(burst)["err"].iloc[100] > factor * max(clean.max(), train_max)


def test_mostly_zero_ratio_calibrated_scores(ratio_frame: pd.DataFrame) -> None:
    train, test = ratio_frame.iloc[: 4 * DAY_POINTS], ratio_frame.iloc[4 * DAY_POINTS :]
    model = Ensemble(directions="up").fit(train)
    clean = model.score(test)
    assert clean.anomaly_score.median() < 0.5
    assert clean.anomaly_score.quantile(0.9) < 0.5
    burst = test.copy()
    burst.iloc[100, 0] = 0.3
    assert model.score(burst).anomaly_score.iloc[100] > 0.9


@pytest.fixture(scope="module")
def flat_frame() -> pd.DataFrame:
    idx = pd.date_range(START, periods=3 * DAY_POINTS, freq="5min")
    return pd.DataFrame({"x": np.full(len(idx), 5.0)}, index=idx)


@pytest.mark.parametrize("transform", ["auto", "none"])
def test_flat_series_scores_zero_until_it_changes(flat_frame: pd.DataFrame, transform: str) -> None:
    train, test = flat_frame.iloc[: 2 * DAY_POINTS + 10], flat_frame.iloc[2 * DAY_POINTS + 10 :]
    model = SeasonalBaseline(transform=transform).fit(train)
    assert np.all(model.train_scores_["x"].to_numpy() < 1e-6)
    unchanged = model.score(test)["x"]
    assert np.all(unchanged.to_numpy() < 1e-6)
    expected = model.decompose(test).expected["x"]
    np.testing.assert_allclose(expected.to_numpy(), 5.0, rtol=1e-9)
    changed = test.copy()
    changed.iloc[20, 0] = 6.0
    scores = model.score(changed)["x"]
    assert np.isfinite(scores.to_numpy()).all()
    assert scores.iloc[20] > 100
    assert np.all(scores.iloc[:20].to_numpy() < 1e-6)


def test_flat_series_has_no_seasonality(flat_frame: pd.DataFrame) -> None:
    model = SeasonalBaseline().fit(flat_frame)
    assert model.seasonality_["x"].startswith("none")


def test_all_zero_series_is_quiet(flat_frame: pd.DataFrame) -> None:
    zeros = flat_frame * 0.0
    model = SeasonalBaseline().fit(zeros.iloc[: 2 * DAY_POINTS + 10])
    assert model.seasonality_["x"].startswith("none")
    assert (model.score(zeros.iloc[2 * DAY_POINTS + 10 :])["x"] == 0).all()


def test_short_series_falls_back_to_no_seasonality() -> None:
    frame = seasonal_frame(DAY_POINTS + 100)  # about 1.3 days
    model = SeasonalBaseline().fit(frame)
    assert model.seasonality_["rps"].startswith("none (")
    assert model.models_["rps"].profile.size == 0
    forced = SeasonalBaseline(seasonality="daily").fit(frame)
    assert forced.seasonality_["rps"].startswith("none (")
    scores = model.score(seasonal_frame(DAY_POINTS + 200).iloc[DAY_POINTS + 100 :])
    assert np.isfinite(scores.to_numpy()).all()


def test_tiny_training_set_falls_back() -> None:
    model = SeasonalBaseline().fit(seasonal_frame(5))
    assert model.seasonality_["rps"].startswith("none (")
    scores = model.score(seasonal_frame(20).iloc[5:])
    assert np.isfinite(scores.to_numpy()).all()


def test_seasonality_choice_follows_history_and_setting() -> None:
    two_weeks = seasonal_frame(15 * DAY_POINTS, noise=1.0)
    assert SeasonalBaseline().fit(two_weeks).seasonality_["rps"] == "weekly"
    assert SeasonalBaseline(seasonality="daily").fit(two_weeks).seasonality_["rps"] == "daily"
    assert SeasonalBaseline(seasonality="none").fit(two_weeks).seasonality_["rps"] == "none"
    three_days = two_weeks.iloc[: 3 * DAY_POINTS]
    assert SeasonalBaseline().fit(three_days).seasonality_["rps"] == "daily"
    weekly = SeasonalBaseline(seasonality="weekly").fit(three_days).seasonality_["rps"]
    assert weekly.startswith("none (")


def test_coarse_sampling_has_no_daily_profile() -> None:
    idx = pd.date_range(START, periods=60, freq="6h")  # 15 days, four points a day
    frame = pd.DataFrame({"x": 10 + np.sin(np.arange(60) * np.pi / 2)}, index=idx)
    model = SeasonalBaseline().fit(frame)
    assert model.seasonality_["x"].startswith("none (")


def test_white_noise_has_no_seasonal_profile() -> None:
    rng = np.random.default_rng(5)
    idx = pd.date_range(START, periods=4 * DAY_POINTS, freq="5min")
    frame = pd.DataFrame({"x": 50 + rng.normal(0, 1, len(idx))}, index=idx)
    model = SeasonalBaseline(min_strength=0.3).fit(frame)
    assert model.seasonality_["x"].startswith("none (")


def test_noise_profile_does_not_hurt_clean_scores() -> None:
    rng = np.random.default_rng(5)
    idx = pd.date_range(START, periods=6 * DAY_POINTS, freq="5min")
    frame = pd.DataFrame({"x": 50 + rng.normal(0, 1, len(idx))}, index=idx)
    train, test = frame.iloc[: 4 * DAY_POINTS], frame.iloc[4 * DAY_POINTS :]
    auto = SeasonalBaseline().fit(train).score(test)["x"]
    plain = SeasonalBaseline(seasonality="none").fit(train).score(test)["x"]
    assert auto.quantile(0.99) < 1.3 * plain.quantile(0.99)
    assert auto.quantile(0.99) < 5.0
