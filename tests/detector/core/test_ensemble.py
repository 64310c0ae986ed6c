"""Tests of the ensemble the service runs: fitting, scoring, streaming and persistence."""

from __future__ import annotations

import copy
import pickle
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from detector.core.base import NotFittedError
from detector.core.defaults import DEFAULT_FAMILIES, FAMILIES
from detector.core.ensemble import JOINT, Ensemble
from detector.core.scores import EnsembleScores

DAY_POINTS = 288  # 5-minute steps
TRAIN_DAYS = 4


def serving_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Traffic with a daily cycle and a latency that follows it, plus noise."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    rps = 100 + 30 * np.sin(np.arange(n) * 2 * np.pi / DAY_POINTS) + rng.normal(0, 3, n)
    latency = 0.2 + 0.002 * rps + rng.normal(0, 0.01, n)
    return pd.DataFrame({"rps": rps, "latency": latency}, index=idx)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return serving_frame((TRAIN_DAYS + 2) * DAY_POINTS, seed=4)


@pytest.fixture(scope="module")
def train(data: pd.DataFrame) -> pd.DataFrame:
    return data.iloc[: TRAIN_DAYS * DAY_POINTS]


@pytest.fixture(scope="module")
def test_day(data: pd.DataFrame) -> pd.DataFrame:
    return data.iloc[TRAIN_DAYS * DAY_POINTS : (TRAIN_DAYS + 1) * DAY_POINTS]


@pytest.fixture(scope="module")
def model(train: pd.DataFrame) -> Ensemble:
    return Ensemble(directions={"latency": "up"}, families=FAMILIES).fit(train)


SPIKE = 150


@pytest.fixture(scope="module")
def spiked(test_day: pd.DataFrame) -> pd.DataFrame:
    out = test_day.copy()
    out.iloc[SPIKE, out.columns.get_loc("latency")] *= 4.0
    return out


def test_fit_learns_every_family_and_signal(model: Ensemble, train: pd.DataFrame) -> None:
    assert model.signals_ == ["rps", "latency"]
    assert list(model.members_) == ["seasonal", "levelshift", "sustained", "iforest"]
    assert [m.joint for m in model.members_.values()] == [False, False, False, True]
    families = ("seasonal", "levelshift", "sustained")
    expected = {(s, f) for s in ("rps", "latency") for f in families}
    assert set(model.calibrators_) == expected | {(JOINT, "iforest")}
    assert model.training_start_ == train.index[0]
    assert model.training_end_ == train.index[-1]
    assert model.step_s_ == pytest.approx(300.0)
    # The latency follows the load: what is left of it once the load is accounted for has too
    # weak a daily profile to keep.
    assert model.baseline_.seasonality_["rps"] == "daily"
    assert model.explained_signals() == {"latency": ("rps",)}


def test_score_shapes_and_ranges(model: Ensemble, test_day: pd.DataFrame) -> None:
    out = model.score(test_day)
    assert isinstance(out, EnsembleScores)
    idx = test_day.index
    for series in (out.anomaly_score, out.anomalous):
        assert series.index.equals(idx)
    for frame in (out.signal_scores, out.signal_anomalous, out.expected, out.lower, out.upper):
        assert frame.index.equals(idx)
        assert list(frame.columns) == ["rps", "latency"]
    pd.testing.assert_frame_equal(out.actual, test_day)
    for values in (out.anomaly_score, out.signal_scores, out.family_scores):
        arr = np.asarray(values, dtype=float)
        assert np.all(np.isfinite(arr))
        assert np.all((arr >= 0.0) & (arr <= 1.0))
    assert set(np.unique(out.anomalous)) <= {0, 1}
    assert set(np.unique(out.signal_anomalous.to_numpy())) <= {0, 1}
    assert set(out.family_scores.columns) == set(model.calibrators_)
    # The overall score is the largest of all, a signal's the largest of its families.
    np.testing.assert_allclose(out.anomaly_score, out.family_scores.max(axis=1))
    for name in ("rps", "latency"):
        own = out.family_scores.xs(name, axis=1, level=0).max(axis=1)
        np.testing.assert_allclose(out.signal_scores[name], own)
    assert (out.lower <= out.expected).all().all()
    assert (out.expected <= out.upper).all().all()


def test_clean_day_is_mostly_quiet(model: Ensemble, test_day: pd.DataFrame) -> None:
    out = model.score(test_day)
    assert out.anomaly_score.median() < 0.5
    assert out.anomalous.mean() < 0.05
    inside = (test_day >= out.lower) & (test_day <= out.upper)
    assert inside.to_numpy().mean() > 0.95


def test_spike_raises_its_signal_and_the_overall_score(
    model: Ensemble, test_day: pd.DataFrame, spiked: pd.DataFrame
) -> None:
    clean = model.score(test_day)
    out = model.score(spiked)
    assert out.signal_scores["latency"].iloc[SPIKE] > 0.9
    assert out.anomaly_score.iloc[SPIKE] > 0.9
    assert out.signal_scores["latency"].iloc[SPIKE] > clean.signal_scores["latency"].quantile(0.9)
    # The other signal's own families never see latency: its score is untouched.
    pd.testing.assert_series_equal(out.signal_scores["rps"], clean.signal_scores["rps"])
    # Rows before the spike are not affected by it (scoring is causal).
    pd.testing.assert_series_equal(out.anomaly_score.iloc[:SPIKE], clean.anomaly_score.iloc[:SPIKE])


def test_direction_up_ignores_a_latency_drop(model: Ensemble, test_day: pd.DataFrame) -> None:
    dropped = test_day.copy()
    dropped.iloc[SPIKE, dropped.columns.get_loc("latency")] /= 4.0
    clean = model.score(test_day).family_scores
    out = model.score(dropped).family_scores
    assert out[("latency", "seasonal")].iloc[SPIKE] < 0.01
    assert (
        out[("latency", "levelshift")].iloc[SPIKE]
        <= clean[("latency", "levelshift")].iloc[SPIKE] + 1e-12
    )
    assert out[(JOINT, "iforest")].iloc[SPIKE] < 0.9


def test_sustained_anomaly_is_flagged(model: Ensemble, test_day: pd.DataFrame) -> None:
    bad = test_day.copy()
    bad.iloc[SPIKE : SPIKE + 6, bad.columns.get_loc("latency")] *= 3.0
    out = model.score(bad)
    assert out.anomalous.iloc[SPIKE + 1 : SPIKE + 6].all()
    assert out.signal_anomalous["latency"].iloc[SPIKE + 1 : SPIKE + 6].all()


def test_gaps_and_reordered_columns(model: Ensemble, test_day: pd.DataFrame) -> None:
    gappy = test_day.copy()
    gappy.iloc[20:40, 0] = np.nan
    gappy.iloc[50, :] = np.nan
    out = model.score(gappy)
    assert np.isfinite(out.anomaly_score).all()
    assert np.isfinite(out.signal_scores.to_numpy()).all()
    # Column order and extra columns do not matter; the model's signals are used.
    shuffled = gappy[["latency", "rps"]].assign(extra=1.0)
    again = model.score(shuffled)
    pd.testing.assert_series_equal(again.anomaly_score, out.anomaly_score)
    pd.testing.assert_frame_equal(again.signal_scores, out.signal_scores)


def _stream(model: Ensemble, frame: pd.DataFrame, cuts: list[int]) -> list[EnsembleScores]:
    bounds = [0, *cuts, len(frame)]
    return [model.update(frame.iloc[lo:hi]) for lo, hi in pairwise(bounds)]


def test_update_in_pieces_equals_score(model: Ensemble, spiked: pd.DataFrame) -> None:
    batch = model.score(spiked)
    stream = copy.deepcopy(model)
    parts = _stream(stream, spiked, [1, 40, SPIKE, SPIKE + 1, 200])
    np.testing.assert_allclose(
        pd.concat([p.anomaly_score for p in parts]), batch.anomaly_score, atol=1e-12
    )
    np.testing.assert_array_equal(pd.concat([p.anomalous for p in parts]), batch.anomalous)
    np.testing.assert_allclose(
        pd.concat([p.signal_scores for p in parts]), batch.signal_scores, atol=1e-12
    )
    np.testing.assert_array_equal(
        pd.concat([p.signal_anomalous for p in parts]), batch.signal_anomalous
    )


def many_signals(n_rows: int, n_signals: int = 30, seed: int = 5) -> pd.DataFrame:
    """Seasonal, negative, mostly-zero and flat signals with scattered missing cells."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2026-01-05", periods=n_rows, freq="5min")
    cycle = np.sin(np.arange(n_rows) * 2 * np.pi / DAY_POINTS)[:, None]
    values = 50 + 20 * cycle + rng.normal(0, 2, (n_rows, n_signals))
    values[:, 1::5] -= 100.0  # negative: the "auto" transform leaves them unlogged
    values[:, 2::5] = rng.binomial(100, 0.01, (n_rows, len(range(2, n_signals, 5)))) / 100
    values[:, 3::5] = 4.0  # flat
    values[rng.random(values.shape) < 0.03] = np.nan
    return pd.DataFrame(values, columns=[f"s{j}" for j in range(n_signals)], index=idx)


def test_row_by_row_equals_one_batch_for_many_signals() -> None:
    """Streaming one row at a time over many signals (every signal stepped at once) agrees with
    scoring the same rows in one call (signal by signal), field by field."""
    frame = many_signals(TRAIN_DAYS * DAY_POINTS + 120)
    train, test = frame.iloc[: TRAIN_DAYS * DAY_POINTS], frame.iloc[TRAIN_DAYS * DAY_POINTS :]
    test = test.copy()
    test.iloc[10:13] = np.nan  # a gap in every signal
    test.iloc[30, ::2] *= 3.0
    test.iloc[60:, ::4] *= 1.5  # a lasting shift: alarms that enter, hold and leave
    directions = {"s0": "up", "s1": "down", "s5": "up", "s6": "down"}
    model = Ensemble(directions=directions, families=FAMILIES, transform="auto", min_points=2).fit(
        train
    )
    batch = model.score(test)
    stream = copy.deepcopy(model)
    rows = [stream.update(test.iloc[i : i + 1]) for i in range(len(test))]
    series = ("anomaly_score", "anomalous")
    frames = ("signal_scores", "signal_anomalous", "family_scores", "expected", "lower", "upper")
    for field in (*series, *frames):
        got = pd.concat([getattr(row, field) for row in rows])
        if field in ("anomalous", "signal_anomalous"):
            np.testing.assert_array_equal(got, getattr(batch, field), err_msg=field)
        else:
            np.testing.assert_allclose(
                got, getattr(batch, field), rtol=0, atol=1e-12, err_msg=field
            )
    assert batch.signal_anomalous.to_numpy().any() and not batch.signal_anomalous.all().all()
    # A compacted model, stored and loaded, carries on from the same streaming state.
    restored = pickle.loads(pickle.dumps(copy.deepcopy(model).compact()))
    pd.testing.assert_frame_equal(restored.score(test).signal_scores, batch.signal_scores)
    pd.testing.assert_frame_equal(restored.score(test).signal_anomalous, batch.signal_anomalous)


def test_score_does_not_change_the_model_update_does(
    model: Ensemble, test_day: pd.DataFrame, spiked: pd.DataFrame
) -> None:
    first = model.score(spiked)
    second = model.score(spiked)
    pd.testing.assert_series_equal(first.anomaly_score, second.anomaly_score)
    stream = copy.deepcopy(model)
    stream.update(spiked.iloc[: SPIKE + 2])
    after = stream.score(spiked.iloc[SPIKE + 2 :])
    np.testing.assert_allclose(after.anomaly_score, first.anomaly_score.iloc[SPIKE + 2 :])


def test_carry_decisions_continues_an_alarm(data: pd.DataFrame) -> None:
    bad = data.copy()
    start = TRAIN_DAYS * DAY_POINTS + 100
    bad.iloc[start : start + 40, bad.columns.get_loc("latency")] *= 3.0
    # Two rows to enter, so that a fresh model visibly needs time a carried decision does not.
    params = {"directions": {"latency": "up"}, "min_points": 2}
    old = Ensemble(**params).fit(bad.iloc[: TRAIN_DAYS * DAY_POINTS])
    old.update(bad.iloc[TRAIN_DAYS * DAY_POINTS : start + 2])
    assert old.hysteresis_["latency"][0] == 1  # the alarm is on: (decision, count) per series
    # A refit on history that now includes the alarm's start takes over mid-incident.
    window = bad.iloc[DAY_POINTS : start + 2]
    rest = bad.iloc[start + 2 : start + 4]
    fresh = Ensemble(**params).fit(window)
    without = copy.deepcopy(fresh).update(rest)
    fresh.carry_decisions(old)
    assert dict(fresh.hysteresis_) == dict(old.hysteresis_)
    carried = fresh.update(rest)
    assert carried.anomalous.iloc[0] == 1  # no gap in the alarm while the model is swapped
    assert without.anomalous.iloc[0] == 0  # a fresh model would need min_points rows first


def test_pickle_round_trip_gives_identical_scores(model: Ensemble, spiked: pd.DataFrame) -> None:
    stream = copy.deepcopy(model)
    stream.update(spiked.iloc[:100])  # mid-stream state must survive too
    restored = pickle.loads(pickle.dumps(stream))
    a, b = stream.score(spiked.iloc[100:]), restored.score(spiked.iloc[100:])
    for field in ("anomaly_score", "anomalous"):
        pd.testing.assert_series_equal(getattr(a, field), getattr(b, field))
    for field in ("signal_scores", "signal_anomalous", "family_scores", "expected"):
        pd.testing.assert_frame_equal(getattr(a, field), getattr(b, field))
    assert restored.get_params() == stream.get_params()


@pytest.mark.parametrize(
    "families", [("seasonal",), ("seasonal", "levelshift"), ("iforest", "seasonal")]
)
def test_family_subsets(families, train: pd.DataFrame, spiked: pd.DataFrame) -> None:
    model = Ensemble(families=families, directions="up").fit(train)
    out = model.score(spiked)
    used = set(out.family_scores.columns.get_level_values(1))
    assert used == set(families)
    assert out.anomaly_score.iloc[SPIKE] > 0.9


def test_seasonal_settings_are_passed_on(train: pd.DataFrame) -> None:
    model = Ensemble(seasonality="none", families=("seasonal",)).fit(train)
    assert model.baseline_.seasonality_ == {"rps": "none", "latency": "none"}
    assert model.baseline_.bins_per_day == 24


@pytest.mark.parametrize("method", ["score", "update"])
def test_use_before_fit_raises(method: str, test_day: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        getattr(Ensemble(), method)(test_day)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"families": ("levelshift", "iforest")}, "seasonal"),
        ({"families": ("seasonal", "prophet")}, "families"),
        ({"horizon": 0.0}, "horizon"),
        ({"enter": 1.2}, "enter"),
        ({"leave": 0.97}, "leave"),
        ({"min_points": 0}, "min_points"),
        ({"directions": "sideways"}, "directions"),
        ({"bins_per_day": 1}, "bins_per_day"),
    ],
)
def test_invalid_parameters(kwargs: dict, name: str, train: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=name):
        Ensemble(**kwargs).fit(train.iloc[:100])


def test_too_few_rows() -> None:
    with pytest.raises(ValueError, match="at least 3 rows"):
        Ensemble().fit(serving_frame(2))


def test_get_params_round_trip() -> None:
    model = Ensemble(directions={"latency": "up"}, window=12, horizon=3600.0, min_points=3)
    params = model.get_params()
    assert params["window"] == 12 and params["families"] == DEFAULT_FAMILIES
    assert Ensemble(**params).get_params() == params
    with pytest.raises(ValueError, match="unknown parameter"):
        model.set_params(windows=3)


@pytest.mark.parametrize("name", ["joint", "overall"])
def test_the_sentinel_names_are_refused_as_signals(train: pd.DataFrame, name: str) -> None:
    with pytest.raises(ValueError, match=f"signal names \\['{name}'\\] are reserved"):
        Ensemble().fit(train.rename(columns={"rps": name}))
