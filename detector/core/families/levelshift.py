"""Level-shift detector: the mean of recent standardised residuals, scaled to unit variance.

A shift of ``d`` scales held for ``w`` points gives ``d * sqrt(w)``: sustained moderate deviations
that no single point makes remarkable stand out, while a lone spike is diluted. The window forgets
after ``w`` points, so once the baseline has accepted a new level the score falls back quickly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from detector.core.base import (
    BaseDetector,
    Directions,
    apply_directions,
    check_directions,
    check_range,
)
from detector.core.features import Window, window_sum

__all__ = ["LevelShiftDetector"]


class LevelShiftDetector(BaseDetector):
    """Scores persistent deviations in a frame of signed standardised residuals.

    Parameters
    ----------
    window : int
        Number of recent points averaged.
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> direction (default ``"both"``).

    Examples
    --------
    >>> idx = pd.date_range("2026-01-05", periods=7, freq="30s")
    >>> z = pd.DataFrame({"a": [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]}, index=idx)
    >>> det = LevelShiftDetector(window=4, directions="up").fit(z.iloc[:3])
    >>> det.score(z.iloc[3:])["a"].tolist()
    [1.0, 2.0, 3.0, 4.0]
    """

    def __init__(self, *, window: int = 8, directions: Directions = "both") -> None:
        self.window = window
        self.directions = directions

    def _validate_params(self) -> None:
        check_range("window", self.window, 2, 10_000)
        check_directions(self.directions)

    def _fit_model(self, frame: pd.DataFrame) -> Window:
        self.signals_ = list(frame.columns)
        self.input_columns_ = self.output_columns_ = self.signals_
        return Window(len(self.signals_), int(self.window))

    def _step(self, z: np.ndarray, state: Window) -> tuple[np.ndarray, Window]:
        total, count = window_sum(z, state)
        # Scaled by the values actually present: beside a gap, fewer values mean less evidence.
        stat = np.divide(total, np.sqrt(count), out=np.zeros_like(total), where=count > 0)
        return apply_directions(stat, self.directions, self.signals_), state
