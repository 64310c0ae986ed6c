"""Ratios scored as counts: night-time discreteness is ordinary, a held rise is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, poisson

from detector.core.ensemble import Ensemble
from detector.core.families.counts import looks_like_ratio, normal_score
from detector.core.families.seasonal import SeasonalBaseline

STEP = 30
DAY_ROWS = 86_400 // STEP


def _traffic(rows: int, rng: np.random.Generator, night: float = 0.5, day: float = 10.0):
    """Requests per step of a daily curve: ``night`` requests/s at 03:00, ``day`` at 15:00."""
    hour = (np.arange(rows) * STEP / 3600.0) % 24
    rate = night + (day - night) * 0.5 * (1 - np.cos(2 * np.pi * (hour - 3) / 24))
    return rng.poisson(rate * STEP)


def _frame(days: int, seed: int, held: slice | None = None) -> pd.DataFrame:
    """Request rate and a JSON error ratio (over all requests, 1 %) at 30 s steps.

    Over the rows ``held`` exactly 4 % of the requests fail.
    """
    rng = np.random.default_rng(seed)
    rows = days * DAY_ROWS
    requests = _traffic(rows, rng)
    errors = rng.binomial(requests, 0.01)
    if held is not None:
        # Spread so that the failures add up to 4 % of the window's requests.
        errors[held] = np.diff(np.floor(0.04 * np.cumsum(np.r_[0, requests[held]])))
    idx = pd.date_range("2026-01-05", periods=rows, freq=f"{STEP}s")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = errors / requests
    return pd.DataFrame({"rps": requests / STEP, "json_error_ratio": ratio}, index=idx)


def test_normal_score_matches_the_poisson_mid_p_value() -> None:
    lam = np.array([0.024, 0.3, 6.0, 50.0])
    for k in (0, 1, 3, 20):
        mid = poisson.sf(k, lam) + 0.5 * poisson.pmf(k, lam)
        want = norm.isf(mid)
        got = normal_score(np.full(4, float(k)), lam)
        np.testing.assert_allclose(got, np.clip(want, -30, 30), atol=1e-6)
    assert np.isnan(normal_score(np.array([np.nan]), np.array([1.0]))).all()
    # Far beyond any training score, still finite and graded.
    far = normal_score(np.array([60.0, 120.0]), np.array([1.0, 1.0]))
    assert np.isfinite(far).all() and far[1] > far[0] > 8


def test_what_looks_like_a_ratio() -> None:
    rng = np.random.default_rng(0)
    assert looks_like_ratio(rng.binomial(20, 0.01, 500) / 20)
    assert not looks_like_ratio(np.zeros(500))  # nothing ever happens: nothing to count
    assert not looks_like_ratio(rng.normal(1.0, 0.1, 500))  # a latency
    assert not looks_like_ratio(np.linspace(0.3, 0.9, 500))  # a utilisation, never 0


def test_denominator_is_found_among_the_other_signals() -> None:
    frame = _frame(4, seed=1)
    model = SeasonalBaseline().fit(frame)
    counts = model.counts_
    assert [model.signals_[j] for j in counts.columns] == ["json_error_ratio"]
    assert model.signals_[counts.source[0]] == "rps"
    assert counts.dispersion[0] == pytest.approx(1.0, abs=0.15)
    # Without the rate, trials come from the ratio's spread by time of day: few at night.
    alone = SeasonalBaseline().fit(frame[["json_error_ratio"]]).counts_
    assert alone.source[0] == -1
    night, afternoon = alone.trials[0, 3], alone.trials[0, 15]
    assert night < 0.25 * afternoon and 5 < night < 40


@pytest.mark.parametrize("with_rate", [True, False])
def test_night_time_discreteness_raises_no_alarm(with_rate: bool) -> None:
    """One failed JSON answer in a dozen requests is 8 %, and ordinary at 3 a.m."""
    frame = _frame(9, seed=2)
    train, test = frame.iloc[: 7 * DAY_ROWS], frame.iloc[7 * DAY_ROWS :]
    columns = None if with_rate else ["json_error_ratio"]
    model = Ensemble(directions="up").fit(train if columns is None else train[columns])
    out = model.score(test if columns is None else test[columns])
    night = test.index.hour < 5
    lone = (test.json_error_ratio > 0.04) & night
    assert lone.sum() > 20  # there are plenty of such steps
    assert out.signal_anomalous["json_error_ratio"].sum() == 0


@pytest.mark.parametrize("with_rate", [True, False])
def test_four_percent_held_ten_minutes_at_one_request_per_second_is_found(with_rate: bool) -> None:
    # At about 1 request/s: the curve passes it at 04:45.
    start = 8 * DAY_ROWS + 4 * 120 + 80  # day 9, 04:40
    frame = _frame(9, seed=3, held=slice(start, start + 20))  # ten minutes of 30 s steps
    train, test = frame.iloc[: 7 * DAY_ROWS], frame.iloc[7 * DAY_ROWS :]
    columns = ["rps", "json_error_ratio"] if with_rate else ["json_error_ratio"]
    model = Ensemble(directions="up").fit(train[columns])
    out = model.score(test[columns])
    at = start - 7 * DAY_ROWS
    flagged = out.signal_anomalous["json_error_ratio"]
    rate = test.rps.iloc[at : at + 20].mean()
    assert 0.8 < rate < 1.2
    assert flagged.iloc[at : at + 20].any(), rate
    assert flagged.iloc[: at - 30].sum() == 0


def test_given_denominators_are_used_and_named_signals_checked() -> None:
    frame = _frame(4, seed=4)
    model = Ensemble(directions="up", denominators={"json_error_ratio": "rps"}).fit(frame)
    counts = model.baseline_.counts_
    assert counts.source[0] == -1 and np.isfinite(counts.dispersion[0])  # given, not found
    with pytest.raises(ValueError, match="'errors' is not a signal"):
        Ensemble(denominators={"errors": "rps"}).fit(frame)


def test_bands_of_ratios_never_go_below_zero() -> None:
    frame = _frame(4, seed=5)
    model = Ensemble(directions="up").fit(frame.iloc[: 3 * DAY_ROWS])
    out = model.score(frame.iloc[3 * DAY_ROWS :])
    assert (out.lower.to_numpy() >= 0).all()
    assert (out.upper["json_error_ratio"] > out.expected["json_error_ratio"]).all()
