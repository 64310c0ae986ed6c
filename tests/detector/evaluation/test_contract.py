"""The scoring contract of ``detector/core/base.py``, checked once over every detector family."""

from __future__ import annotations

import copy
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.core.base import BaseDetector, NotFittedError
from detector.core.families.iforest import IsolationForestDetector
from detector.core.families.levelshift import LevelShiftDetector
from detector.core.families.seasonal import SeasonalBaseline

DAY_POINTS = 288  # 5-minute steps

ESTIMATORS = {
    "seasonal": lambda: SeasonalBaseline(directions={"a": "up"}),
    "levelshift": lambda: LevelShiftDetector(window=8),
    "iforest": lambda: IsolationForestDetector(n_estimators=30, random_state=0),
}


def _frame(days: int, seed: int) -> pd.DataFrame:
    n = days * DAY_POINTS
    idx = pd.date_range("2026-01-05", periods=n, freq="5min")
    rng = np.random.default_rng(seed)
    daily = np.sin(np.arange(n) * 2 * np.pi / DAY_POINTS)
    return pd.DataFrame(
        {"a": 10 + 3 * daily + rng.normal(size=n), "b": 5 - daily + rng.normal(size=n)},
        index=idx,
    )


@pytest.fixture(scope="module", params=sorted(ESTIMATORS))
def setup(
    request: pytest.FixtureRequest,
) -> tuple[BaseDetector, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A fitted detector, its training rows, rows that follow them, and their batch scores."""
    data = _frame(5, seed=3)
    train, test = data.iloc[: 4 * DAY_POINTS], data.iloc[4 * DAY_POINTS :].iloc[:300].copy()
    test.iloc[40:60, 0] += 6.0  # a shift
    test.iloc[100:110, 1] = np.nan  # a gap
    det = ESTIMATORS[request.param]().fit(train)
    return det, train, test, det.score(test)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_update_in_pieces_equals_score(setup, cuts: list[int]) -> None:
    det, _, test, batch = setup
    stream = copy.deepcopy(det)
    bounds = [0, *sorted(cuts), len(test)]
    streamed = pd.concat([stream.update(test.iloc[lo:hi]) for lo, hi in pairwise(bounds)])
    assert streamed.index.equals(batch.index)
    np.testing.assert_allclose(streamed.to_numpy(), batch.to_numpy(), rtol=1e-9, atol=1e-12)


def test_scores_are_finite_non_negative_and_highest_at_the_shift(setup) -> None:
    *_, batch = setup
    values = batch.to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert batch.iloc[40:60].max().max() > batch.iloc[150:].quantile(0.99).max()


def test_score_leaves_state_alone(setup) -> None:
    det, _, test, batch = setup
    pd.testing.assert_frame_equal(det.score(test), batch)


def test_fit_state_is_a_replay_of_the_training_rows(setup) -> None:
    """The state ``fit`` leaves is the one ``reset`` then ``update`` on the training rows reach."""
    det, train, test, batch = setup
    replay = copy.deepcopy(det)
    replay.reset().update(train)
    pd.testing.assert_frame_equal(replay.score(test), batch)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("method", ["score", "update", "reset"])
def test_use_before_fit_raises(name: str, method: str) -> None:
    det = ESTIMATORS[name]()
    args = () if method == "reset" else (_frame(1, seed=0),)
    with pytest.raises(NotFittedError, match="not fitted"):
        getattr(det, method)(*args)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_get_params_round_trip(name: str) -> None:
    det = ESTIMATORS[name]()
    params = det.get_params()
    assert type(det)(**params).get_params() == params
    with pytest.raises(ValueError, match="unknown parameter"):
        det.set_params(not_a_parameter=1)
