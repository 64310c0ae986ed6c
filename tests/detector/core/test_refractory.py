"""The refractory period: onsets reported once, repeats held, and streaming equal to batch."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core.ensemble import Ensemble
from detector.core.refractory import Refractory


def _reference(column: list[float], enter: float, points: int) -> list[bool]:
    """Row by row, as the period is defined: held if within ``points`` rows of the last onset."""
    held, last = [], None
    for i, value in enumerate(column):
        if value >= enter and last is not None and i - last <= points:
            held.append(True)
        else:
            held.append(False)
            if value >= enter:
                last = i
    return held


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(
        st.lists(st.sampled_from([0.0, 0.5, 0.94, 0.95, 0.99, np.nan]), min_size=3, max_size=3),
        min_size=1,
        max_size=40,
    ),
    points=st.integers(0, 6),
    cuts=st.lists(st.integers(1, 39), max_size=4),
)
def test_blocks_in_any_split_equal_the_row_by_row_definition(
    scores: list[list[float]], points: int, cuts: list[int]
) -> None:
    matrix = np.array(scores)
    ref = Refractory(["a", "b", "c"], enter=0.95, points=points)
    bounds = sorted({0, len(matrix), *(c for c in cuts if c < len(matrix))})
    held = np.vstack([ref.hold(matrix[a:b]) for a, b in itertools.pairwise(bounds)])
    expected = [_reference(np.nan_to_num(matrix[:, j]).tolist(), 0.95, points) for j in range(3)]
    np.testing.assert_array_equal(held, np.array(expected).T)


def test_scoring_without_advancing_leaves_the_period_alone() -> None:
    ref = Refractory(["a"], enter=0.9, points=3)
    ref.hold(np.array([[0.95]]))
    assert ref.hold(np.array([[0.99]]), advance=False).tolist() == [[True]]
    assert dict(ref) == {"a": 0}
    ref.hold(np.zeros((5, 1)))
    assert dict(ref) == {"a": 4}  # saturated: past the period
    assert ref.hold(np.array([[0.99]])).tolist() == [[False]]


def test_carry_continues_a_period_into_a_new_model() -> None:
    old = Refractory(["a", "b"], enter=0.9, points=5)
    old.hold(np.array([[0.95, 0.1], [0.1, 0.1]]))
    new = Refractory(["a", "c"], enter=0.9, points=5)
    new.carry(old)
    assert new.hold(np.array([[0.99, 0.99]])).tolist() == [[True, False]]


def test_invalid_period_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="points"):
        Refractory(["a"], points=-1)
    idx = pd.date_range("2026-01-05", periods=50, freq="5min")
    with pytest.raises(ValueError, match="refractory"):
        Ensemble(refractory=-2).fit(pd.DataFrame({"x": np.arange(50.0)}, index=idx))


def test_ensemble_reports_an_onset_once_and_keeps_the_decision() -> None:
    idx = pd.date_range("2026-01-05", periods=3 * 288 + 40, freq="5min")
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"latency": 1 + 0.05 * rng.standard_normal(len(idx))}, index=idx)
    train, test = frame.iloc[: 3 * 288], frame.iloc[3 * 288 :].copy()
    test.iloc[5:8, 0] = 3.0  # three spiking rows, then a second burst 25 rows later
    test.iloc[30, 0] = 3.0
    model = Ensemble(directions="up").fit(train)
    plain = Ensemble(directions="up", refractory=0).fit(train).score(test)
    out = model.score(test)
    # Rows 6 and 7 continue the open event: repeats, held in both.
    assert out.anomaly_score.iloc[5] >= 0.95 and plain.anomaly_score.iloc[5] >= 0.95
    for scores in (out.anomaly_score, plain.anomaly_score):
        assert (scores.iloc[6:8] < 0.95).all() and (scores.iloc[6:8] > 0.94).all()
    assert not out.anomalous.iloc[25:30].any()  # the first event is over ...
    assert out.anomaly_score.iloc[30] >= 0.95  # ... and past the 20-row period: a new onset
    # Decisions and the rows below ``enter`` are those of the detector without the period.
    pd.testing.assert_series_equal(out.anomalous, plain.anomalous)
    below = plain.anomaly_score < 0.95
    pd.testing.assert_series_equal(out.anomaly_score[below], plain.anomaly_score[below])
    held = out.family_scores.iloc[6:8].to_numpy()
    assert (held < 0.95).all()
