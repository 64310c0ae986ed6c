"""Tests of the seasonal baseline: what it flags, what it leaves alone, and its contract.

Its choice of seasonality and the series it must not over-read (mostly zero, flat, short,
noise only) are in ``test_seasonal_choice.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from support.seasonal import DAY_POINTS, seasonal_frame

from detector.core.base import NotFittedError
from detector.core.families.seasonal import SeasonalBaseline


@pytest.fixture(scope="module")
def six_days() -> pd.DataFrame:
    return seasonal_frame(6 * DAY_POINTS, seed=1)


@pytest.fixture(scope="module")
def train(six_days: pd.DataFrame) -> pd.DataFrame:
    return six_days.iloc[: 4 * DAY_POINTS]


@pytest.fixture(scope="module")
def clean_test(six_days: pd.DataFrame) -> pd.DataFrame:
    return six_days.iloc[4 * DAY_POINTS :]


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> SeasonalBaseline:
    return SeasonalBaseline().fit(train)


SPIKE = 100
SHIFT = 250


@pytest.fixture(scope="module")
def anomalous_test(clean_test: pd.DataFrame) -> pd.DataFrame:
    out = clean_test.copy()
    out.iloc[SPIKE, 0] += 80.0  # about 25 noise sigmas
    out.iloc[SHIFT:, 0] += 40.0  # a lasting step of about 13 sigmas
    return out


def test_daily_profile_is_learned(fitted: SeasonalBaseline, clean_test: pd.DataFrame) -> None:
    assert fitted.seasonality_ == {"rps": "daily"}
    truth = 100 + 30 * np.sin(np.arange(4 * DAY_POINTS, 6 * DAY_POINTS) * 2 * np.pi / DAY_POINTS)
    expected = fitted.decompose(clean_test).expected["rps"].to_numpy()
    assert np.corrcoef(expected, truth)[0, 1] > 0.95
    assert np.median(np.abs(expected - truth)) < 3.0  # within one noise sigma


def test_spike_and_level_shift_score_high_elsewhere_low(
    fitted: SeasonalBaseline, anomalous_test: pd.DataFrame
) -> None:
    scores = fitted.score(anomalous_test)["rps"].to_numpy()
    clean = np.delete(scores[:SHIFT], SPIKE)
    clean_q99 = np.quantile(clean, 0.99)
    assert scores[SPIKE] > 3 * clean_q99
    assert scores[SPIKE] > 10
    # The shift's first rows stand out as much as a big spike would.
    assert scores[SHIFT : SHIFT + 3].min() > 2 * clean_q99
    # The rows right before the spike and the shift are not tainted by them.
    assert scores[SPIKE - 5 : SPIKE].max() < scores[SPIKE] / 3
    assert scores[SHIFT - 5 : SHIFT].max() < scores[SHIFT] / 3


def test_lasting_shift_becomes_the_new_normal(
    train: pd.DataFrame, anomalous_test: pd.DataFrame
) -> None:
    model = SeasonalBaseline(accept_points=3).fit(train)
    scores = model.score(anomalous_test)["rps"].to_numpy()
    before = np.delete(scores[:SHIFT], SPIKE)
    late = scores[SHIFT + DAY_POINTS // 2 :]  # 12 hours after the step
    assert np.median(late) < 2 * np.median(before) + 0.5
    assert np.quantile(late, 0.99) < scores[SHIFT] / 2


def test_clean_seasonal_data_stays_quiet(
    fitted: SeasonalBaseline, clean_test: pd.DataFrame, anomalous_test: pd.DataFrame
) -> None:
    clean = fitted.score(clean_test)["rps"]
    spike = fitted.score(anomalous_test)["rps"].iloc[SPIKE]
    assert clean.quantile(0.99) < spike / 4
    assert clean.quantile(0.99) < 5.0  # standardised residuals of Gaussian noise
    assert clean.median() < 1.5
    assert (clean >= 0).all()


def test_training_scores_are_kept_and_finite(fitted: SeasonalBaseline, train: pd.DataFrame) -> None:
    scores = fitted.train_scores_
    assert list(scores.columns) == ["rps"]
    assert scores.index.equals(train.index)
    assert np.isfinite(scores.to_numpy()).all()
    assert (scores.to_numpy() >= 0).all()


def _with_one_drop(frame: pd.DataFrame, at: int, by: float) -> pd.DataFrame:
    out = frame.copy()
    out.iloc[at, 0] -= by
    return out


def test_direction_up_ignores_drops(train: pd.DataFrame, clean_test: pd.DataFrame) -> None:
    dropped = _with_one_drop(clean_test, SPIKE, 60.0)
    up = SeasonalBaseline(directions="up").fit(train).score(dropped)["rps"]
    down = SeasonalBaseline(directions="down").fit(train).score(dropped)["rps"]
    both = SeasonalBaseline(directions="both").fit(train).score(dropped)["rps"]
    assert up.iloc[SPIKE] == 0.0
    assert down.iloc[SPIKE] > 10
    assert both.iloc[SPIKE] == pytest.approx(down.iloc[SPIKE])
    # A rise is the mirror image: up sees it, down does not.
    raised = _with_one_drop(clean_test, SPIKE, -60.0)
    assert SeasonalBaseline(directions="up").fit(train).score(raised)["rps"].iloc[SPIKE] > 10
    assert SeasonalBaseline(directions="down").fit(train).score(raised)["rps"].iloc[SPIKE] == 0


def test_direction_mapping_applies_per_signal(six_days: pd.DataFrame) -> None:
    frame = six_days.assign(lat=six_days["rps"] / 100.0)
    train, test = frame.iloc[: 4 * DAY_POINTS], frame.iloc[4 * DAY_POINTS :].copy()
    test.iloc[SPIKE] = test.iloc[SPIKE] / 3  # both signals drop
    model = SeasonalBaseline(directions={"rps": "up"}).fit(train)  # lat defaults to both
    scores = model.score(test)
    assert scores["rps"].iloc[SPIKE] == 0.0
    assert scores["lat"].iloc[SPIKE] > 10


def test_gaps_nan_cells_and_irregular_spacing(six_days: pd.DataFrame) -> None:
    rng = np.random.default_rng(7)
    frame = six_days.assign(lat=six_days["rps"] / 50.0)
    frame.iloc[100:130, 0] = np.nan  # a run of missing cells in one signal
    frame.iloc[rng.choice(len(frame), 100, replace=False), 1] = np.nan  # scattered ones
    frame = frame.drop(frame.index[400:500])  # a gap of rows (8 hours)
    keep = np.sort(rng.choice(len(frame), int(0.8 * len(frame)), replace=False))
    frame = frame.iloc[keep]  # irregular spacing
    jitter = pd.to_timedelta(rng.uniform(-60, 60, len(frame)), unit="s")
    frame.index = frame.index + jitter
    frame = frame.sort_index()
    cut = int(0.7 * len(frame))
    train, test = frame.iloc[:cut], frame.iloc[cut:].copy()
    model = SeasonalBaseline().fit(train)
    assert model.seasonality_ == {"rps": "daily", "lat": "daily"}
    assert np.isfinite(model.train_scores_.to_numpy()).all()
    test.iloc[50, 0] += 100.0
    scores = model.score(test)
    values = scores.to_numpy()
    assert np.isfinite(values).all()
    assert (values >= 0).all()
    # Missing cells score 0; the spike still stands out in irregular data.
    assert (scores["lat"][test["lat"].isna()] == 0).all()
    assert scores["rps"].iloc[50] > 3 * scores["rps"].drop(scores.index[50]).quantile(0.99)
    dec = model.decompose(test)
    assert np.isfinite(dec.expected["rps"].to_numpy()).all()


def test_missing_signal_column_scores_zero(
    fitted: SeasonalBaseline, clean_test: pd.DataFrame
) -> None:
    other = clean_test.rename(columns={"rps": "other"})
    scores = fitted.score(other)
    assert list(scores.columns) == ["rps"]
    assert (scores["rps"] == 0).all()


def test_all_nan_rows_score_zero(fitted: SeasonalBaseline, clean_test: pd.DataFrame) -> None:
    frame = clean_test.copy()
    frame.iloc[10:20, 0] = np.nan
    frame.iloc[30, 0] = np.inf  # infinities are treated as missing
    scores = fitted.score(frame)["rps"]
    assert (scores.iloc[10:20] == 0).all()
    assert scores.iloc[30] == 0
    assert np.isfinite(scores.to_numpy()).all()


def test_decompose_band_contains_expected(
    fitted: SeasonalBaseline, anomalous_test: pd.DataFrame
) -> None:
    dec = fitted.decompose(anomalous_test)
    for part in (dec.z, dec.expected, dec.lower, dec.upper):
        assert part.index.equals(anomalous_test.index)
        assert list(part.columns) == ["rps"]
        assert np.isfinite(part.to_numpy()).all()
    assert (dec.lower <= dec.expected).all().all()
    assert (dec.expected <= dec.upper).all().all()
    assert (dec.lower < dec.upper).all().all()
    # The spike is far outside the band; most clean rows are inside it.
    actual = anomalous_test["rps"]
    assert actual.iloc[SPIKE] > dec.upper["rps"].iloc[SPIKE]
    inside = (actual >= dec.lower["rps"]) & (actual <= dec.upper["rps"])
    assert inside.iloc[:SHIFT].mean() > 0.95
    # z is the signed residual behind the score.
    np.testing.assert_allclose(
        fitted.scores_from(dec.z).to_numpy(), fitted.score(anomalous_test).to_numpy()
    )


def test_decompose_advance_keeps_state(train: pd.DataFrame, anomalous_test: pd.DataFrame) -> None:
    a, b = anomalous_test.iloc[:200], anomalous_test.iloc[200:]
    model = SeasonalBaseline().fit(train)
    expected = model.score(anomalous_test)["rps"].to_numpy()
    model.decompose(a)  # no advance: the state is unchanged
    np.testing.assert_allclose(model.score(anomalous_test)["rps"].to_numpy(), expected)
    model.decompose(a, advance=True)
    np.testing.assert_allclose(model.score(b)["rps"].to_numpy(), expected[200:])


def test_score_does_not_change_the_model(
    fitted: SeasonalBaseline, anomalous_test: pd.DataFrame
) -> None:
    first = fitted.score(anomalous_test)
    second = fitted.score(anomalous_test)
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("method", ["score", "update", "decompose"])
def test_use_before_fit_raises(method: str, clean_test: pd.DataFrame) -> None:
    model = SeasonalBaseline()
    with pytest.raises(NotFittedError, match="fit"):
        getattr(model, method)(clean_test)
    assert issubclass(NotFittedError, ValueError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("transform", "sqrt"),
        ("seasonality", "hourly"),
        ("bins_per_day", 2),
        ("bins_per_day", 1000),
        ("min_strength", 1.5),
        ("min_strength", -0.1),
        ("level_halflife", 0.0),
        ("level_halflife", float("nan")),
        ("clip", -1.0),
        ("accept_points", 0),
        ("band", 0.0),
        ("band", float("inf")),
        ("directions", "sideways"),
        ("directions", {"rps": "upward"}),
    ],
)
def test_invalid_parameters_raise_at_fit(name: str, value, train: pd.DataFrame) -> None:
    model = SeasonalBaseline(**{name: value})  # construction stores, fit validates
    with pytest.raises(ValueError, match=name):
        model.fit(train)


def test_log_transform_needs_positive_values() -> None:
    frame = seasonal_frame(DAY_POINTS, level=0.0, amp=0.0, noise=1.0) * 0.0 - 1.0
    with pytest.raises(ValueError, match="log"):
        SeasonalBaseline(transform="log").fit(frame)


def test_frame_checks() -> None:
    with pytest.raises(TypeError):
        SeasonalBaseline().fit(pd.DataFrame({"x": [1.0, 2.0]}))  # no DatetimeIndex
    with pytest.raises(TypeError):
        SeasonalBaseline().fit(np.zeros((3, 1)))  # type: ignore[arg-type]


def test_get_params_round_trip(train: pd.DataFrame) -> None:
    model = SeasonalBaseline(directions={"rps": "up"}, bins_per_day=48, band=2.5, clip=4.0)
    params = model.get_params()
    assert params["bins_per_day"] == 48
    assert params["directions"] == {"rps": "up"}
    clone = SeasonalBaseline(**params)
    assert clone.get_params() == params
    model.fit(train)
    assert model.get_params() == params  # fit leaves hyper-parameters alone
    assert clone.set_params(band=4.0) is clone
    assert clone.get_params()["band"] == 4.0
    with pytest.raises(ValueError, match="unknown parameter"):
        clone.set_params(bandwidth=1.0)
    assert "bins_per_day=48" in repr(model)
