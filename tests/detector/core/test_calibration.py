"""Tests of the tail calibrator: raw scores to anomaly_score in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import norm

from detector.core.base import NotFittedError
from detector.core.calibration import CalibratorBank, TailCalibrator

HORIZON = 2880  # one day of 30-second points


@pytest.fixture(scope="module")
def training_scores() -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=5000))


@pytest.fixture(scope="module")
def cal(training_scores: np.ndarray) -> TailCalibrator:
    return TailCalibrator().fit(training_scores, horizon_points=HORIZON)


finite_scores = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(raw=hnp.arrays(np.float64, st.integers(1, 50), elements=finite_scores))
def test_scores_in_unit_interval_and_monotone(cal: TailCalibrator, raw: np.ndarray) -> None:
    raw = np.sort(raw)
    out = cal.transform(raw)
    assert out.shape == raw.shape
    assert np.all((out >= 0.0) & (out <= 1.0))
    assert np.all(np.diff(out) >= 0.0)
    surv = cal.survival(raw)
    assert np.all((surv >= 0.0) & (surv <= 1.0))
    assert np.all(np.diff(surv) <= 0.0)


@settings(max_examples=40, deadline=None)
@given(
    train=hnp.arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    ),
    horizon=st.floats(min_value=1.0, max_value=1e6),
    raw=hnp.arrays(np.float64, 20, elements=st.floats(0.0, 1000.0)),
)
def test_monotone_for_any_training_set(train: np.ndarray, horizon: float, raw) -> None:
    cal = TailCalibrator().fit(train, horizon_points=horizon)
    raw = np.sort(raw)
    out = cal.transform(raw)
    assert np.all(np.isfinite(out))
    assert np.all((out >= 0.0) & (out <= 1.0))
    assert np.all(np.diff(out) >= -1e-15)


def test_ordinary_scores_low_rare_scores_high(cal: TailCalibrator, training_scores) -> None:
    median, q999 = np.quantile(training_scores, [0.5, 0.999])
    out = cal.transform(np.array([0.0, median, q999, 10 * q999]))
    assert out[0] < 0.01
    assert out[1] < 0.01  # half of all training points score this high
    assert out[3] > 0.99


def test_beyond_training_max_still_graded(cal: TailCalibrator, training_scores) -> None:
    top = training_scores.max()
    beyond = top + cal.beta_ * np.array([0.01, 1.0, 3.0, 10.0, 100.0])
    out = cal.transform(beyond)
    assert out[0] < 1.0  # just above what training saw: not saturated
    assert np.all(np.diff(out) > 0)  # still ordered, not a flat 1
    assert out[-1] == pytest.approx(1.0, abs=1e-9)  # far above: certain
    surv = cal.survival(beyond)
    assert np.all(surv > 0)
    assert np.all(np.diff(surv) < 0)


def test_rarity_matches_training_frequency(cal: TailCalibrator, training_scores) -> None:
    # In the body the survival is the empirical fraction of training scores at least as large.
    for q in (0.1, 0.5, 0.9):
        x = np.quantile(training_scores, q)
        assert cal.survival(np.array([x]))[0] == pytest.approx(1 - q, abs=0.01)


def test_horizon_makes_scores_stricter(training_scores: np.ndarray) -> None:
    x = np.array([np.quantile(training_scores, 0.9999)])
    short = TailCalibrator().fit(training_scores, horizon_points=10).transform(x)[0]
    long = TailCalibrator().fit(training_scores, horizon_points=10_000).transform(x)[0]
    assert short > long


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_flat_training_scores(value: float) -> None:
    cal = TailCalibrator().fit(np.full(1000, value), horizon_points=HORIZON)
    out = cal.transform(np.array([0.0, value, value + 1e-3, value + 1.0, value + 1e6]))
    assert np.all(np.isfinite(out))
    assert np.all((out >= 0) & (out <= 1))
    assert np.all(np.diff(out) >= 0)
    assert out[1] < 0.01  # what training always showed is not anomalous
    assert out[3] > 0.99  # anything clearly above a flat history is
    assert cal.beta_ > 0


def test_nan_and_inf_training_scores_are_ignored(training_scores: np.ndarray) -> None:
    dirty = np.concatenate([training_scores, [np.nan, np.inf, -np.inf, np.nan]])
    clean = TailCalibrator().fit(training_scores, horizon_points=HORIZON)
    fitted = TailCalibrator().fit(dirty, horizon_points=HORIZON)
    probe = np.array([0.0, 1.0, 3.0, 5.0])
    np.testing.assert_allclose(fitted.transform(probe), clean.transform(probe))


def test_nan_input_is_handled(cal: TailCalibrator) -> None:
    out = cal.transform(np.array([np.nan, 0.0, 100.0]))
    assert np.all(np.isfinite(out))
    assert out[0] == out[1]  # a missing score is no evidence: like a zero score
    assert out[0] < 0.01
    assert out[2] > 0.99


def test_all_nan_or_empty_training() -> None:
    for train in (np.array([]), np.array([np.nan, np.nan])):
        cal = TailCalibrator().fit(train, horizon_points=HORIZON)
        out = cal.transform(np.array([0.0, 1.0, 100.0]))
        assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))
        assert np.all(np.diff(out) >= 0)


def test_short_training_still_has_a_tail() -> None:
    cal = TailCalibrator(min_tail_points=10).fit(np.arange(20.0), horizon_points=100)
    assert cal.threshold_ < 19.0  # the quantile drops so the tail has exceedances
    out = cal.transform(np.array([19.0, 25.0, 60.0]))
    assert out[0] < out[1] < out[2]


def test_not_fitted() -> None:
    cal = TailCalibrator()
    with pytest.raises(NotFittedError, match="fit"):
        cal.transform(np.array([1.0]))
    with pytest.raises(NotFittedError):
        cal.survival(np.array([1.0]))


@pytest.mark.parametrize(
    ("kwargs", "horizon", "name"),
    [
        ({"tail_quantile": 0.3}, 100.0, "tail_quantile"),
        ({"tail_quantile": 1.0}, 100.0, "tail_quantile"),
        ({"min_tail_points": 0}, 100.0, "min_tail_points"),
        ({}, 0.5, "horizon_points"),
        ({}, float("nan"), "horizon_points"),
    ],
)
def test_invalid_parameters(kwargs: dict, horizon: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TailCalibrator(**kwargs).fit(np.arange(100.0), horizon_points=horizon)


def fitted_calibrators(seed: int) -> dict[str, TailCalibrator]:
    """Calibrators of different sizes and shapes: ties, flat, tiny, empty and NaN-ridden data."""
    rng = np.random.default_rng(seed)
    trainings = {
        "exponential": rng.exponential(size=700),
        "ties": np.round(rng.exponential(size=400), 1),
        "flat": np.full(50, 2.5),
        "tiny": rng.exponential(size=3),
        "empty": np.array([]),
        "gappy": np.where(rng.random(300) < 0.3, np.nan, rng.gamma(2.0, size=300)),
    }
    horizons = [2880, 100, 10, 2880, 50, 1e5]
    return {
        key: TailCalibrator().fit(train, horizon_points=horizon)
        for (key, train), horizon in zip(trainings.items(), horizons, strict=True)
    }


def probes(calibrators: dict[str, TailCalibrator], seed: int) -> np.ndarray:
    """Rows of scores per calibrator: random, exactly on training values, NaN and infinite."""
    rng = np.random.default_rng(seed)
    on_training = [np.resize(cal.sorted_, 40) for cal in calibrators.values()]
    rows = np.vstack([rng.exponential(3.0, (40, len(calibrators))), np.column_stack(on_training)])
    rows[::7, ::2] = np.nan
    rows[3, 1] = np.inf
    return rows


@pytest.mark.parametrize("seed", range(3))
def test_bank_equals_each_calibrator_before_and_after_compaction(seed: int) -> None:
    calibrators = fitted_calibrators(seed)
    bank = CalibratorBank(calibrators)
    assert list(bank) == list(calibrators) and len(bank) == len(calibrators)
    x = probes(calibrators, seed)
    for _ in range(2):  # as fitted, then compacted (twice: compaction is idempotent)
        with np.errstate(over="ignore"):  # the infinite score, as with one calibrator
            got = bank.transform(x)
            for j, cal in enumerate(calibrators.values()):
                np.testing.assert_array_equal(got[:, j], cal.transform(x[:, j]))
                np.testing.assert_array_equal(bank.survival(x)[:, j], cal.survival(x[:, j]))
        bank.compact()
        for cal in calibrators.values():
            cal.compact()
    kept = [cal.sorted_.size for cal in calibrators.values()]
    assert (bank.size + bank.tied).tolist() == kept  # the bank folds ties into a count
    assert bank.n_dropped.tolist() == [cal.n_dropped_ for cal in calibrators.values()]
    assert sum(kept) < 700  # compaction dropped most of the stored training scores


@pytest.mark.parametrize("precision", [40.0, 3.0, 0.2])
def test_compaction_folds_ties_without_changing_a_score(precision: float) -> None:
    # Mostly zeros, as a sustained shift scores: the tail threshold is 0, so every score is
    # "at or above" it; some columns rounded, so that ties sit above the threshold too.
    rng = np.random.default_rng(11)
    calibrators = {}
    for j in range(6):
        z = rng.exponential(size=3000) * (rng.random(3000) < 0.003 * (j + 1))
        z = np.round(z, 1) if j % 2 else z
        calibrators[j] = TailCalibrator(tail_quantile=0.98).fit(z, horizon_points=2880)
    x = np.tile(np.r_[0.0, 0.05, 0.1, rng.exponential(size=200) * 4][:, None], (1, 6))
    bank = CalibratorBank(calibrators).compact(precision=precision)
    for cal in calibrators.values():  # each keeps its scores as values, ties and all
        cal.compact(precision=precision)
    expected = np.column_stack([cal.survival(x[:, j]) for j, cal in calibrators.items()])
    np.testing.assert_array_equal(bank.survival(x), expected)
    assert bank.values.size < 0.1 * sum(c.sorted_.size for c in calibrators.values())
    bank.compact(precision=precision)  # idempotent
    np.testing.assert_array_equal(bank.survival(x), expected)


def test_bank_of_one_row_and_of_no_rows() -> None:
    calibrators = fitted_calibrators(7)
    bank = CalibratorBank(calibrators)
    row = np.array([[1.0, 0.5, 2.5, 0.0, 1.0, 30.0]])
    expected = [cal.transform(row[0, j : j + 1])[0] for j, cal in enumerate(calibrators.values())]
    np.testing.assert_array_equal(bank.transform(row)[0], expected)
    assert bank.transform(np.zeros((0, len(bank)))).shape == (0, len(bank))


def test_bank_needs_fitted_calibrators() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        CalibratorBank({"a": TailCalibrator()})


def test_a_smooth_score_is_not_read_as_a_light_tail() -> None:
    """Window means cross the tail quantile in a few long clusters of small excesses: the tail
    is never taken lighter than a normal one with the same body."""
    rng = np.random.default_rng(4)
    smooth = np.convolve(rng.normal(size=20_000), np.ones(60) / np.sqrt(60), mode="same")
    cal = TailCalibrator().fit(np.abs(smooth), horizon_points=2880)
    body = (np.quantile(np.abs(smooth), 0.98) - np.median(np.abs(smooth))) / 2.054
    assert cal.beta_ >= 0.39 * body - 1e-12
    # Just beyond anything seen in training is not yet a certain alarm.
    assert cal.transform(np.array([np.abs(smooth).max() * 1.05]))[0] < 0.95


def test_normal_tail_reads_far_scores_as_the_model_says() -> None:
    rng = np.random.default_rng(5)
    lumpy = np.round(np.abs(rng.normal(size=5_000)), 1)  # discrete, like normal scores of counts
    normal = TailCalibrator(tail="normal").fit(lumpy, horizon_points=2880)
    fitted = TailCalibrator().fit(lumpy, horizon_points=2880)
    x = np.array([5.5])
    p = normal.survival(x)[0]
    assert p == pytest.approx(normal.p_threshold_ * norm.sf(5.5) / norm.sf(normal.threshold_))
    assert normal.transform(x)[0] > 0.99 > fitted.transform(x)[0]
    bank = CalibratorBank({"n": normal, "e": fitted})
    np.testing.assert_allclose(
        bank.transform(np.array([[5.5, 5.5]]))[0], [normal.transform(x)[0], fitted.transform(x)[0]]
    )
    with pytest.raises(ValueError, match="tail"):
        TailCalibrator(tail="gumbel").fit(lumpy, horizon_points=10)
