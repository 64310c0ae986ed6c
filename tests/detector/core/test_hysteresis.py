"""Tests of the hysteresis that turns calibrated scores into the anomalous decision."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.core.hysteresis import Hysteresis, HysteresisGroup


def decide(scores, **kwargs) -> list[int]:
    return Hysteresis(**kwargs).decide(np.array(scores, dtype=float)).tolist()


def reference(scores, state, enter, leave, need) -> tuple[list[int], tuple[int, int]]:
    """The rule stated row by row: count rows of the condition that would flip the decision."""
    on, count = state
    out = []
    for s in np.nan_to_num(np.asarray(scores, dtype=float)).tolist():
        flip = s < leave if on else s >= enter
        count = count + 1 if flip else 0
        if count >= need:
            on, count = 1 - on, 0
        out.append(on)
    return out, (on, count)


def test_enter_needs_min_points_in_a_row() -> None:
    assert decide([0.95, 0.2, 0.95, 0.2], enter=0.9, leave=0.5, min_points=2) == [0, 0, 0, 0]
    assert decide([0.95, 0.95, 0.95], enter=0.9, leave=0.5, min_points=2) == [0, 1, 1]
    assert decide([0.95] * 4, enter=0.9, leave=0.5, min_points=3) == [0, 0, 1, 1]


def test_enter_threshold_is_inclusive() -> None:
    assert decide([0.9, 0.9], enter=0.9, leave=0.5, min_points=2) == [0, 1]
    assert decide([0.8999, 0.8999], enter=0.9, leave=0.5, min_points=2) == [0, 0]


def test_scores_between_leave_and_enter_keep_the_decision() -> None:
    # Off stays off and on stays on in the dead band.
    assert decide([0.7] * 5, enter=0.9, leave=0.5, min_points=1) == [0] * 5
    out = decide([0.95, 0.7, 0.6, 0.55, 0.5], enter=0.9, leave=0.5, min_points=1)
    assert out == [1, 1, 1, 1, 1]


def test_leave_needs_min_points_below_leave() -> None:
    scores = [0.95, 0.95, 0.4, 0.95, 0.4, 0.4, 0.4]
    assert decide(scores, enter=0.9, leave=0.5, min_points=2) == [0, 1, 1, 1, 1, 0, 0]


def test_min_points_one_follows_thresholds_directly() -> None:
    scores = [0.1, 0.95, 0.6, 0.3, 0.95]
    assert decide(scores, enter=0.9, leave=0.5, min_points=1) == [0, 1, 1, 0, 1]


def test_no_flapping_on_noisy_scores_around_enter() -> None:
    rng = np.random.default_rng(0)
    scores = np.clip(0.9 + 0.05 * rng.normal(size=500), 0, 1)  # hovers around enter
    out = Hysteresis(enter=0.9, leave=0.5, min_points=2).decide(scores)
    changes = int(np.sum(np.diff(out) != 0))
    assert changes <= 1  # once on, it does not leave while scores stay above leave


def test_nan_scores_count_as_zero() -> None:
    assert decide([0.95, 0.95, np.nan, np.nan], enter=0.9, leave=0.5, min_points=2) == [0, 1, 1, 0]


def test_output_dtype_and_state() -> None:
    h = Hysteresis(enter=0.9, leave=0.5, min_points=2)
    out = h.decide(np.array([0.95, 0.95, 0.1]))
    assert out.dtype == np.int8
    assert h.state == (1, 1)  # on, with one row below leave so far
    assert h.decide(np.array([])).tolist() == []
    assert h.state == (1, 1)


@settings(max_examples=100, deadline=None)
@given(
    scores=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=0, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=5),
    min_points=st.integers(min_value=1, max_value=4),
)
def test_state_carried_across_calls_equals_one_call(scores, cuts, min_points) -> None:
    arr = np.array(scores, dtype=float)
    whole = Hysteresis(enter=0.8, leave=0.4, min_points=min_points)
    expected = whole.decide(arr)
    pieces = Hysteresis(enter=0.8, leave=0.4, min_points=min_points)
    bounds = [0, *sorted(min(c, arr.size) for c in cuts), arr.size]
    got = np.concatenate([pieces.decide(arr[lo:hi]) for lo, hi in pairwise(bounds)])
    np.testing.assert_array_equal(got, expected)
    assert pieces.state == whole.state


@settings(max_examples=50, deadline=None)
@given(scores=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=80))
def test_decisions_only_change_after_min_points_evidence(scores) -> None:
    need = 3
    out = Hysteresis(enter=0.8, leave=0.4, min_points=need).decide(np.array(scores))
    for i in np.flatnonzero(np.diff(out) != 0) + 1:
        window = np.array(scores[i - need + 1 : i + 1])
        assert window.size == need
        if out[i] == 1:
            assert np.all(window >= 0.8)
        else:
            assert np.all(window < 0.4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"enter": 1.5}, "enter"),
        ({"enter": -0.1}, "enter"),
        ({"enter": 0.5, "leave": 0.6}, "leave"),
        ({"min_points": 0}, "min_points"),
    ],
)
def test_invalid_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Hysteresis(**kwargs)


# Scores on, just below and between the thresholds, so that ties and the dead band are exercised.
LEVELS = [0.0, 0.39, 0.4, 0.6, 0.79, 0.8, 1.0, np.nan]


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.sampled_from(LEVELS), min_size=0, max_size=120),
    width=st.integers(min_value=1, max_value=4),
    need=st.integers(min_value=1, max_value=4),
    states=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3)), min_size=4, max_size=4),
)
def test_group_equals_the_rule_row_by_row(cells, width, need, states) -> None:
    states = states[:width]
    rows = len(cells) // width
    scores = np.array(cells[: rows * width], dtype=float).reshape(rows, width)
    names = [f"s{j}" for j in range(width)]
    # A carried count is always below min_points: reaching it would have switched the decision.
    start = {
        name: (on, min(count, need - 1)) for name, (on, count) in zip(names, states, strict=True)
    }
    group = HysteresisGroup(names, enter=0.8, leave=0.4, min_points=need)
    group.carry(start)
    out = group.decide(scores)
    assert out.dtype == np.int8 and out.shape == (rows, width)
    for j, name in enumerate(names):
        expected, state = reference(scores[:, j], start[name], 0.8, 0.4, need)
        assert out[:, j].tolist() == expected
        assert group[name] == state


def test_group_without_advance_keeps_its_states() -> None:
    group = HysteresisGroup(["a", "b"], enter=0.9, leave=0.5, min_points=2)
    high = np.full((3, 2), 0.95)
    assert group.decide(high, advance=False).tolist() == [[0, 0], [1, 1], [1, 1]]
    assert dict(group) == {"a": (0, 0), "b": (0, 0)}
    group.decide(high)
    assert dict(group) == {"a": (1, 0), "b": (1, 0)}
    assert group.decide(np.zeros((0, 2))).shape == (0, 2)
    assert dict(group) == {"a": (1, 0), "b": (1, 0)}


def test_group_carry_takes_only_shared_names() -> None:
    old = HysteresisGroup(["a", "gone"], enter=0.9, leave=0.5)
    old.decide(np.array([[0.95, 0.95]]))
    new = HysteresisGroup(["a", "new"], enter=0.9, leave=0.5)
    new.carry(old)
    assert dict(new) == {"a": (1, 0), "new": (0, 0)}
    assert len(new) == 2 and "gone" not in new


def test_group_checks_its_thresholds() -> None:
    with pytest.raises(ValueError, match="leave"):
        HysteresisGroup(["a"], enter=0.5, leave=0.6)
