"""The sustained family: lasting shifts over several windows, not spikes; a drift found in time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.core.ensemble import Ensemble
from detector.core.families.sustained import SustainedShift
from detector.evaluation.backtest import backtest

STEP = 60
DAY_ROWS = 86_400 // STEP


def _parts(u: pd.DataFrame) -> pd.DataFrame:
    nothing = u * np.nan
    return SustainedShift.parts(u, nothing, nothing)


def _noise(rows: int, seed: int = 0) -> pd.DataFrame:
    idx = pd.date_range("2026-01-05", periods=rows, freq=f"{STEP}s")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.standard_normal(rows)}, index=idx)


@pytest.fixture(scope="module")
def fitted() -> tuple[SustainedShift, pd.DataFrame]:
    # Four and a half days: enough for an hour's window to alarm (100 of them).
    cut = 9 * DAY_ROWS // 2
    u = _noise(cut + DAY_ROWS)
    det = SustainedShift(directions="up").fit(_parts(u.iloc[:cut]))
    return det, u.iloc[cut:]


def test_windows_follow_the_step_and_learn_their_spread(fitted) -> None:
    det, _ = fitted
    assert det.rows_.tolist() == [5, 10, 20, 60]
    assert det.alarming_.all()
    np.testing.assert_allclose(det.scale_, 1.0, atol=0.15)  # white noise: the iid spread


def test_a_moderate_shift_scores_while_it_lasts_a_spike_does_not(fitted) -> None:
    det, test = fitted
    shifted = test.copy()
    shifted.iloc[100:160] += 1.5  # an hour at 1.5 scales: no single row is remarkable
    spiked = test.copy()
    spiked.iloc[300] += 40.0
    out = det.score(_parts(shifted))["score"]["a"]
    assert out.iloc[115:160].min() > 5.0
    assert out.iloc[225:280].max() < 4.0  # gone once the longest window has passed it
    spike = det.score(_parts(spiked))["score"]["a"]
    assert spike.iloc[295:320].max() < 3.0  # one row counts for at most 3 scales


def test_keep_tells_that_a_deviation_lasts(fitted) -> None:
    det, test = fitted
    shifted = test.copy()
    shifted.iloc[100:130] += 3.0
    keep = det.score(_parts(shifted))["keep", "a"]
    assert (keep.iloc[104:130] >= 3.0).all()
    assert (keep.iloc[140:200] < 3.0).all()


def test_young_models_and_short_histories_do_not_alarm() -> None:
    u = _noise(2 * DAY_ROWS)
    det = SustainedShift(directions="up").fit(_parts(u))
    assert not det.alarming_.any()  # two days: the normal spread of windows is not known yet
    out = det.score(_parts(u.iloc[-100:] + 3.0))
    assert (out["score"]["a"] == 0).all() and (out["keep"]["a"] > 3).any()


def test_incidents_in_training_are_left_out_of_what_calibration_learns() -> None:
    u = _noise(4 * DAY_ROWS, seed=1)
    u.iloc[DAY_ROWS : DAY_ROWS + 300] += 4.0  # five hours of drift inside the training window
    det = SustainedShift(directions="up").fit(_parts(u))
    scores = det.train_scores_["score"]["a"]
    assert scores.iloc[DAY_ROWS + 30 : DAY_ROWS + 290].isna().all()
    assert scores.iloc[2 * DAY_ROWS :].notna().all()
    np.testing.assert_allclose(det.scale_, 1.0, atol=0.2)  # the MAD is not moved


def test_invalid_parameters_are_named() -> None:
    u = _parts(_noise(100))
    with pytest.raises(ValueError, match="horizons"):
        SustainedShift(horizons=()).fit(u)
    with pytest.raises(ValueError, match="clip"):
        SustainedShift(clip=0.0).fit(u)


def test_a_slow_drift_is_caught_within_an_hour_of_leaving_the_band() -> None:
    """Latency rising by half over five hours: found soon after it leaves the band."""
    rows = 8 * DAY_ROWS
    idx = pd.date_range("2026-01-05", periods=rows, freq=f"{STEP}s")
    rng = np.random.default_rng(7)
    hour = (np.arange(rows) * STEP / 3600.0) % 24
    latency = 2.0 * (1 + 0.1 * np.sin(2 * np.pi * hour / 24)) * np.exp(0.05 * rng.normal(size=rows))
    start = 6 * DAY_ROWS + 10 * 60  # day 7, 10:00
    ramp = np.clip((np.arange(rows) - start) / (5 * 60), 0.0, 1.0)
    frame = pd.DataFrame({"latency": latency * (1 + 0.5 * ramp)}, index=idx)
    out = backtest(frame, {"directions": "up"})
    # Three deviations of 5 % noise: out of the band once the drift passes +15 %.
    out_of_band = idx[start + int(0.3 * 5 * 60)]
    alarm = out.index[(out.anomalous == 1) & (out.index >= idx[start])]
    assert len(alarm) and alarm[0] <= out_of_band + pd.Timedelta("60min"), alarm[:1]
    assert not out.anomalous.iloc[3 * DAY_ROWS : start].any()
    # Once found, it stays flagged while latency stays up (until the new level is accepted).
    assert out.anomalous.loc[alarm[0] : alarm[0] + pd.Timedelta("30min")].all()


def test_the_ensemble_keeps_an_event_open_while_the_shift_lasts() -> None:
    rows = 5 * DAY_ROWS
    u = _noise(rows, seed=3)
    frame = pd.DataFrame({"latency": 2.0 + 0.1 * u["a"].to_numpy()}, index=u.index)
    model = Ensemble(directions="up").fit(frame.iloc[: 4 * DAY_ROWS])
    test = frame.iloc[4 * DAY_ROWS :].copy()
    test.iloc[600:640, 0] *= 1.3  # forty minutes of latency x1.3
    out = model.score(test)
    assert out.signal_anomalous["latency"].iloc[602:640].all()
    assert not out.signal_anomalous["latency"].iloc[660:].any()
    # The onset is reported once; the rows that continue the event are held below 0.95.
    scores = out.signal_scores["latency"]
    assert (scores.iloc[600:640] >= 0.95).sum() == 1
