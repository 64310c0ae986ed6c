"""The ``seasonal`` family: how far each row is from the seasonal baseline's expectation.

The baseline (:class:`~detector.core.families.seasonal.SeasonalBaseline`) carries the state, the
expectation and the band; this family scores what it leaves, the standardised residuals, in each
signal's alert direction, so the ensemble runs it through the same contract as every other family.

>>> idx = pd.date_range("2026-01-05", periods=3, freq="60s")
>>> z = pd.DataFrame({"a": [-2.0, 0.5, 3.0]}, index=idx)
>>> SeasonalDeviation(directions="up").fit(z).score(z)["a"].tolist()
[0.0, 0.5, 3.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from detector.core.base import BaseDetector, Directions, apply_directions, check_directions

__all__ = ["SeasonalDeviation"]


class SeasonalDeviation(BaseDetector):
    """Scores standardised residuals by their size in each signal's alert direction; no state.

    Parameters
    ----------
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> direction (default ``"both"``).
    """

    keeps_infinite = True

    def __init__(self, *, directions: Directions = "both") -> None:
        self.directions = directions

    def _validate_params(self) -> None:
        check_directions(self.directions)

    def _fit_model(self, frame: pd.DataFrame) -> None:
        self.input_columns_ = self.output_columns_ = list(frame.columns)
        return None

    def _step(self, values: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        return apply_directions(values, self.directions, self.input_columns_), state
