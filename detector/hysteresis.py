"""Hysteresis: calibrated scores to the 0/1 ``anomalous`` decision, without flapping."""

from __future__ import annotations

import numpy as np

from detector.base import check_range

__all__ = ["Hysteresis"]


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
        check_range("enter", enter, 0.0, 1.0)
        check_range("leave", leave, 0.0, enter)
        check_range("min_points", min_points, 1, 10_000)
        self.enter = enter
        self.leave = leave
        self.min_points = int(min_points)
        self.state = (0, 0)  # (decision, rows the opposite condition has held)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Decisions for consecutive rows; updates ``state``."""
        on, count = self.state
        out = np.zeros(len(scores), dtype=np.int8)
        enter, leave, need = self.enter, self.leave, self.min_points
        for i, s in enumerate(np.nan_to_num(np.asarray(scores, dtype=float)).tolist()):
            flip = s < leave if on else s >= enter
            count = count + 1 if flip else 0
            if count >= need:
                on, count = 1 - on, 0
            out[i] = on
        self.state = (on, count)
        return out
