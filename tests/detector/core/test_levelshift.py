"""Tests of the level-shift detector on frames of standardised residuals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from detector.core.families.levelshift import LevelShiftDetector

STEP = "30s"


def z_frame(values: dict[str, np.ndarray], start: str = "2026-01-05") -> pd.DataFrame:
    n = len(next(iter(values.values())))
    return pd.DataFrame(values, index=pd.date_range(start, periods=n, freq=STEP))


def following(frame: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    start = frame.index[-1] + pd.Timedelta(STEP)
    return z_frame(values, start=str(start))


@pytest.fixture(scope="module")
def noise() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return z_frame({"a": rng.normal(size=2000), "b": rng.normal(size=2000)})


def test_constant_shift_grows_as_sqrt_of_window() -> None:
    window, d = 9, 1.5
    train = z_frame({"a": np.zeros(20)})
    det = LevelShiftDetector(window=window, directions="both").fit(train)
    scores = det.score(following(train, {"a": np.full(15, d)}))["a"].to_numpy()
    # After k shifted points the window mean is k*d/window; the score is that times sqrt(window).
    k = np.minimum(np.arange(1, 16), window)
    np.testing.assert_allclose(scores, k * d / window * math.sqrt(window))
    assert scores[-1] == pytest.approx(d * math.sqrt(window))


def test_lone_spike_is_diluted_and_forgotten() -> None:
    window = 8
    train = z_frame({"a": np.zeros(20)})
    det = LevelShiftDetector(window=window).fit(train)
    test = np.zeros(30)
    test[5] = 6.0
    scores = det.score(following(train, {"a": test}))["a"].to_numpy()
    assert scores[5] == pytest.approx(6.0 / math.sqrt(window))
    assert scores[5] < 6.0
    assert np.all(scores[5 : 5 + window] > 0)
    assert np.all(scores[5 + window :] == 0)  # the window has forgotten it
    assert np.all(scores[:5] == 0)


def test_sustained_moderate_shift_found_in_noise(noise: pd.DataFrame) -> None:
    train = noise.iloc[:1500]
    det = LevelShiftDetector().fit(train)
    test = noise.iloc[1500:].copy()
    test.iloc[200:260, 0] += 2.0  # each point only 2 sigmas up; no single one is remarkable
    scores = det.score(test)
    clean_q99 = scores["a"].iloc[:200].quantile(0.99)
    train_q99 = det.train_scores_["a"].quantile(0.99)
    shifted = scores["a"].iloc[215:260]  # once the window is full of shifted points
    assert shifted.median() > 2 * max(clean_q99, train_q99)
    # The other signal is not affected.
    assert scores["b"].iloc[200:260].max() < 2 * det.train_scores_["b"].quantile(0.999)
    # Training scores of noise look like |N(0, 1)|: unit variance by construction.
    assert 1.5 < train_q99 < 4.0


def test_training_tail_carries_into_score() -> None:
    train = z_frame({"a": np.array([0.0, 0.0, 0.0, 2.0, 2.0, 2.0])})
    det = LevelShiftDetector(window=4).fit(train)
    first = det.score(following(train, {"a": np.array([2.0])}))["a"].iloc[0]
    assert first == pytest.approx(2.0 * 2.0)  # mean 2 over 4 points, times sqrt(4)
    assert det.train_scores_["a"].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("directions", "up_scored", "down_scored"),
    [("up", True, False), ("down", False, True), ("both", True, True)],
)
def test_directions(directions: str, up_scored: bool, down_scored: bool) -> None:
    train = z_frame({"a": np.zeros(10)})
    det = LevelShiftDetector(window=4, directions=directions).fit(train)
    up = det.score(following(train, {"a": np.full(6, 3.0)}))["a"]
    down = det.score(following(train, {"a": np.full(6, -3.0)}))["a"]
    assert bool(up.iloc[-1] > 5) == up_scored
    assert bool(down.iloc[-1] > 5) == down_scored
    assert (up >= 0).all() and (down >= 0).all()


def test_direction_mapping_per_signal() -> None:
    train = z_frame({"a": np.zeros(10), "b": np.zeros(10)})
    det = LevelShiftDetector(window=4, directions={"a": "down"}).fit(train)
    scores = det.score(following(train, {"a": np.full(6, 3.0), "b": np.full(6, 3.0)}))
    assert (scores["a"] == 0).all()  # a only alerts downwards
    assert scores["b"].iloc[-1] == pytest.approx(6.0)  # b gets the default, both


def test_missing_values_are_skipped() -> None:
    train = z_frame({"a": np.zeros(10)})
    det = LevelShiftDetector(window=4).fit(train)
    values = np.array([2.0, np.nan, 2.0, np.nan, np.nan, np.nan, np.nan, np.nan])
    scores = det.score(following(train, {"a": values}))["a"].to_numpy()
    assert np.isfinite(scores).all()
    assert (scores >= 0).all()
    assert scores[2] > scores[0] > 0  # more shifted values in the window, a higher score
    assert scores[-1] == 0.0  # a window of nothing but gaps scores 0
    # A full window without gaps is exactly the documented statistic.
    full = det.score(following(train, {"a": np.full(4, 2.0)}))["a"].to_numpy()
    assert full[-1] == pytest.approx(2.0 * math.sqrt(4))


def test_gaps_do_not_inflate_the_score() -> None:
    train = z_frame({"a": np.zeros(20)})
    det = LevelShiftDetector(window=8).fit(train)
    # One ordinary residual of 1.5 sigmas, then the scrape stops for a while.
    values = np.array([1.5, *[np.nan] * 10])
    scores = det.score(following(train, {"a": values}))["a"].to_numpy()
    # No window statistic can be more remarkable than the single observation behind it.
    assert scores.max() <= 1.5 + 1e-9


def test_missing_signal_column_scores_zero(noise: pd.DataFrame) -> None:
    det = LevelShiftDetector().fit(noise.iloc[:100])
    scores = det.score(noise.iloc[100:150][["b"]])
    assert list(scores.columns) == ["a", "b"]
    assert np.isfinite(scores.to_numpy()).all()
    # Column a is missing: its window runs out of data and scores 0 once the tail is gone.
    assert (scores["a"].iloc[8:] == 0).all()


def test_empty_frame(noise: pd.DataFrame) -> None:
    det = LevelShiftDetector().fit(noise.iloc[:100])
    out = det.update(noise.iloc[100:100])
    assert out.shape == (0, 2)
    pd.testing.assert_frame_equal(det.score(noise.iloc[100:120]), det.score(noise.iloc[100:120]))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window", 1),
        ("window", 0),
        ("window", -3),
        ("window", 10**6),
        ("window", float("nan")),
        ("directions", "upwards"),
        ("directions", {"a": "left"}),
    ],
)
def test_invalid_parameters_raise_at_fit(name: str, value, noise: pd.DataFrame) -> None:
    det = LevelShiftDetector(**{name: value})
    with pytest.raises(ValueError, match=name):
        det.fit(noise)


def test_get_params_round_trip(noise: pd.DataFrame) -> None:
    det = LevelShiftDetector(window=12, directions={"a": "up"})
    params = det.get_params()
    assert params == {"window": 12, "directions": {"a": "up"}}
    assert LevelShiftDetector(**params).get_params() == params
    det.fit(noise.iloc[:50])
    assert det.get_params() == params
    with pytest.raises(ValueError, match="unknown parameter"):
        det.set_params(size=3)
