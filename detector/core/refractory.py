"""Refractory period: after a score reaches the alarm level, its repeats are not new news.

Exceedances cluster: a burst, a flapping dependency or a noisy incident scores high on many rows
in a short time, and every one of them would count as a fresh alarm to whoever reads the score
(a pager, NAB's scoring, a data scientist counting alerts per day). After an *onset*, a row at or
above ``enter``, the next ``points`` rows of the same series that reach ``enter`` are held just
below it; the first row after the period that reaches it is a new onset. Only the reported score
changes: the ``anomalous`` decision is taken on the scores before holding (its hysteresis already
keeps one alarm per episode), so the score reports each onset once and alerts read its peak.

On NAB this is worth about 9 points (standard profile, 48.9 to 58.0 with 20 points); the
scenarios' event figures do not change (``docs/evaluation.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from detector.core.base import check_range

__all__ = ["Refractory"]


class Refractory(Mapping[str, int]):
    """Hold repeats of an onset just below ``enter`` for ``points`` rows, per named series.

    As a mapping it gives, per series, the rows since its last onset (``points + 1`` or more:
    none within the period).

    Parameters
    ----------
    names : list of str
        The series, in column order.
    enter : float
        The alarm level (the hysteresis' ``enter``).
    points : int
        Rows after an onset during which the series cannot start another; 0 turns it off.

    Examples
    --------
    >>> ref = Refractory(["a"], enter=0.95, points=2)
    >>> scores = np.array([[0.99], [0.97], [0.2], [0.96], [0.98]])
    >>> ref.hold(scores)[:, 0].tolist()
    [False, True, False, False, True]
    """

    def __init__(self, names: list[str], *, enter: float = 0.95, points: int = 20) -> None:
        check_range("enter", enter, 0.0, 1.0)
        check_range("points", points, 0, 1_000_000)
        self.names = list(names)
        self.enter = float(enter)
        self.points = int(points)
        self._position = {name: j for j, name in enumerate(self.names)}
        self.since = np.full(len(self.names), self.points + 1, dtype=np.int64)

    @property
    def cap(self) -> float:
        """The value a held row gets: the largest float below ``enter``."""
        return float(np.nextafter(self.enter, -np.inf))

    def __getitem__(self, name: str) -> int:
        return int(self.since[self._position[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def hold(self, scores: np.ndarray, *, advance: bool = True) -> np.ndarray:
        """Which cells of ``scores`` (rows, series) are repeats to hold below ``enter``.

        ``advance=False`` leaves the state as it was, for scoring that changes nothing.
        """
        s = np.nan_to_num(np.asarray(scores, dtype=np.float64))
        rows = s.shape[0]
        held = np.zeros(s.shape, dtype=bool)
        since = self.since.copy()
        if rows == 0:
            return held
        high = s >= self.enter
        # Only rows that reach ``enter`` can be onsets, and they are few: walk those alone.
        for j in np.flatnonzero(high.any(axis=0)):
            last = -int(since[j]) - 1  # the last onset's row, relative to this block's first
            for i in np.flatnonzero(high[:, j]):
                if i - last <= self.points:
                    held[i, j] = True
                else:
                    last = int(i)
            since[j] = rows - 1 - last
        untouched = ~high.any(axis=0)
        since[untouched] += rows
        # Saturate: only "within the period or not" matters, and it keeps the counters bounded.
        np.minimum(since, self.points + 1, out=since)
        if advance:
            self.since = since
        return held

    def carry(self, previous: Mapping[str, int]) -> None:
        """Continue the periods of the series that ``previous`` also has."""
        for name, since in previous.items():
            j = self._position.get(name)
            if j is not None:
                self.since[j] = min(int(since), self.points + 1)
