"""Hysteresis: calibrated scores to the 0/1 ``anomalous`` decision, without flapping.

The decision needs no loop over rows: a row switches it on exactly when it is the ``min_points``-th
(or later) of a run of rows at or above ``enter``, and off when it is that far into a run below
``leave``. The decision at any row is therefore the kind of the last such row, or the state carried
in; a whole block of rows and series is decided with a few array operations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from detector.core.base import check_range

__all__ = ["Hysteresis", "HysteresisGroup"]


class Hysteresis:
    """Enter when the score has stayed at or above ``enter`` for ``min_points`` rows; leave when
    it has stayed below ``leave`` for ``min_points`` rows.

    The defaults (enter at 0.95 on a single row, leave below 0.5) were chosen on the scenario
    evaluation: the scores already mark onsets sharply, so waiting for a second row only delayed
    alarms and lost short incidents.

    ``state`` carries the decision and the counters across calls, so streaming and batch agree.

    Examples
    --------
    >>> Hysteresis(enter=0.9, leave=0.5, min_points=2).decide(
    ...     np.array([0.95, 0.95, 0.7, 0.4, 0.4, 0.95])).tolist()
    [0, 1, 1, 1, 0, 0]
    """

    def __init__(self, *, enter: float = 0.95, leave: float = 0.5, min_points: int = 1) -> None:
        _check(enter, leave, min_points)
        self.enter = enter
        self.leave = leave
        self.min_points = int(min_points)
        self.state = (0, 0)  # (decision, rows the opposite condition has held)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Decisions for consecutive rows; updates ``state``."""
        on, count = (np.array([value]) for value in self.state)
        column = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
        out, on, count = _decide_block(column, on, count, self.enter, self.leave, self.min_points)
        self.state = (int(on[0]), int(count[0]))
        return out[:, 0]


class HysteresisGroup(Mapping[str, tuple[int, int]]):
    """One :class:`Hysteresis` per named series, all with the same thresholds, decided together.

    As a mapping it gives each name's ``state``.

    Examples
    --------
    >>> group = HysteresisGroup(["a", "b"], enter=0.9, leave=0.5)
    >>> group.decide(np.array([[0.95, 0.1], [0.7, 0.1]])).tolist()
    [[1, 0], [1, 0]]
    >>> dict(group)
    {'a': (1, 0), 'b': (0, 0)}
    """

    def __init__(
        self, names: list[str], *, enter: float = 0.95, leave: float = 0.5, min_points: int = 1
    ) -> None:
        _check(enter, leave, min_points)
        self.enter = enter
        self.leave = leave
        self.min_points = int(min_points)
        self.names = list(names)
        self._position = {name: j for j, name in enumerate(self.names)}
        self.on = np.zeros(len(self.names), dtype=np.int8)
        self.count = np.zeros(len(self.names), dtype=np.int64)

    def __getitem__(self, name: str) -> tuple[int, int]:
        j = self._position[name]
        return int(self.on[j]), int(self.count[j])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def decide(self, scores: np.ndarray, *, advance: bool = True) -> np.ndarray:
        """Decisions for rows (first axis) of every series (second axis, in ``names`` order).

        ``advance=False`` leaves the states as they were, for scoring that changes nothing.
        """
        out, on, count = _decide_block(
            scores, self.on, self.count, self.enter, self.leave, self.min_points
        )
        if advance:
            self.on, self.count = on, count
        return out

    def carry(self, previous: Mapping[str, tuple[int, int]]) -> None:
        """Continue the states of the series that ``previous`` also has."""
        for name, (on, count) in previous.items():
            j = self._position.get(name)
            if j is not None:
                self.on[j], self.count[j] = on, count


def _check(enter: float, leave: float, min_points: int) -> None:
    check_range("enter", enter, 0.0, 1.0)
    check_range("leave", leave, 0.0, enter)
    check_range("min_points", min_points, 1, 10_000)


def _decide_block(
    scores: np.ndarray,
    on: np.ndarray,
    count: np.ndarray,
    enter: float,
    leave: float,
    need: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decide ``scores`` (rows, series) from the states ``on`` and ``count`` (one per series).

    Returns the 0/1 decisions and the states after the last row; the inputs are not changed.
    NaN scores count as 0.
    """
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    if s.shape[0] == 0:
        return np.zeros(s.shape, dtype=np.int8), on.copy(), count.copy()
    high, low = s >= enter, s < leave
    # The carried count continues the run that can switch the current state; the other run's
    # length before this block cannot matter, as it would only confirm the current state.
    high_run = _run_lengths(high, np.where(on == 0, count, 0))
    low_run = _run_lengths(low, np.where(on == 1, count, 0))
    switch = np.where(high_run >= need, 1, np.where(low_run >= need, 0, -1))
    rows = np.arange(s.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(switch >= 0, rows, -1), axis=0)
    taken = np.take_along_axis(switch, np.maximum(last, 0), axis=0)
    out = np.where(last >= 0, taken, on).astype(np.int8)
    on_after = out[-1].copy()
    count_after = np.where(on_after == 1, low_run[-1], high_run[-1])
    return out, on_after, count_after


def _run_lengths(flag: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each row (0 on False rows), down the first axis.

    ``carried`` rows of True precede the first row, for each column.
    """
    total = np.cumsum(flag, axis=0)
    at_last_false = np.maximum.accumulate(np.where(flag, 0, total), axis=0)
    unbroken = np.logical_and.accumulate(flag, axis=0)
    return total - at_last_false + carried * unbroken
