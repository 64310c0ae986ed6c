"""Isolation forest over the joint residual features of all signals.

Each signal alone may look ordinary while the combination does not (latency up while traffic is
flat); a forest over every signal's residual, recent mean and jump isolates such rows quickly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from detector.base import (
    BaseDetector,
    Directions,
    check_directions,
    check_range,
    direction_for,
)
from detector.features import Window, residual_features

__all__ = ["IsolationForestDetector"]

JOINT = "joint"


class IsolationForestDetector(BaseDetector):
    """scikit-learn ``IsolationForest`` on a frame of signed standardised residuals.

    The output has one column, ``"joint"``. Residuals against a signal's direction are clipped to
    0 first, so a latency drop is not reported for a signal configured to alert only upwards.

    Parameters
    ----------
    n_estimators, max_samples : int
        Passed to ``IsolationForest``.
    window : int
        Points in the recent-mean feature.
    max_train : int
        At most this many training rows (a random subset) are used to grow the trees.
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> direction (default ``"both"``).
    random_state : int
        Seed for the forest and the subsample.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> idx = pd.date_range("2026-01-05", periods=500, freq="30s")
    >>> z = pd.DataFrame(rng.normal(size=(500, 2)), index=idx, columns=["a", "b"])
    >>> det = IsolationForestDetector(random_state=0).fit(z)
    >>> odd = pd.DataFrame({"a": [6.0], "b": [-6.0]}, index=idx[-1:] + pd.Timedelta("30s"))
    >>> bool(det.score(odd)["joint"].iloc[0] > det.train_scores_["joint"].quantile(0.99))
    True
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int = 256,
        window: int = 8,
        max_train: int = 20_000,
        directions: Directions = "both",
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.window = window
        self.max_train = max_train
        self.directions = directions
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_range("n_estimators", self.n_estimators, 1, 10_000)
        check_range("max_samples", self.max_samples, 2, 1_000_000)
        check_range("window", self.window, 2, 10_000)
        check_range("max_train", self.max_train, 10, 1e9)
        check_directions(self.directions)

    def _directional(self, z: pd.DataFrame) -> pd.DataFrame:
        out = z.reindex(columns=self.signals_).copy()
        for name in self.signals_:
            direction = direction_for(self.directions, name)
            if direction == "up":
                out[name] = out[name].clip(lower=0.0)
            elif direction == "down":
                out[name] = out[name].clip(upper=0.0)
        return out

    def _fit_model(self, frame: pd.DataFrame) -> Window:
        self.signals_ = list(frame.columns)
        feats = residual_features(self._directional(frame), Window(len(self.signals_), self.window))
        rng = np.random.default_rng(self.random_state)
        rows = feats.to_numpy()
        if rows.shape[0] > self.max_train:
            rows = rows[rng.choice(rows.shape[0], size=int(self.max_train), replace=False)]
        self.forest_ = IsolationForest(
            n_estimators=int(self.n_estimators),
            max_samples=min(int(self.max_samples), rows.shape[0]),
            random_state=self.random_state,
        ).fit(rows)
        self.feature_names_ = list(feats.columns)
        return Window(len(self.signals_), int(self.window))

    def _run(self, frame: pd.DataFrame, state: Window) -> tuple[pd.DataFrame, Window]:
        feats = residual_features(self._directional(frame), state)
        if feats.shape[0] == 0:
            return pd.DataFrame({JOINT: np.zeros(0)}, index=frame.index), state
        # scikit-learn's score_samples is higher for normal rows: this is the one sign flip.
        raw = -self.forest_.score_samples(feats.to_numpy())
        return pd.DataFrame({JOINT: raw}, index=frame.index), state
