"""The ensemble the service runs: seasonal baseline, level shift and isolation forest, calibrated.

Every family's raw score is calibrated on the training data into ``anomaly_score`` in [0, 1]; a
signal's score is the largest of its families', the overall score the largest of all signals' and
the joint isolation forest's, so each alarm can be traced to the family and signal that raised it.
Hysteresis turns scores into the ``anomalous`` decision per signal and overall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from detector.base import (
    Directions,
    NotFittedError,
    ParamsMixin,
    check_choice,
    check_directions,
    check_frame,
    check_range,
)
from detector.calibration import TailCalibrator
from detector.hysteresis import Hysteresis
from detector.methods.iforest import JOINT, IsolationForestDetector
from detector.methods.levelshift import LevelShiftDetector
from detector.methods.seasonal import SeasonalBaseline
from detector.timeutil import DAY_S, seconds

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "JOINT", "OVERALL", "Ensemble", "EnsembleScores"]

FAMILIES = ("seasonal", "levelshift", "iforest")
# The families whose addition improved the evaluation (docs/evaluation.md has the figures); the
# others stay available for signals where they help.
DEFAULT_FAMILIES = ("seasonal",)
OVERALL = "overall"


@dataclass(frozen=True)
class EnsembleScores:
    """Everything the ensemble says about a stretch of rows."""

    anomaly_score: pd.Series  # overall, in [0, 1]
    anomalous: pd.Series  # overall 0/1 decision after hysteresis
    signal_scores: pd.DataFrame  # per signal, in [0, 1]
    signal_anomalous: pd.DataFrame  # per signal 0/1
    detector_scores: pd.DataFrame  # columns (signal or "joint", family), in [0, 1]
    actual: pd.DataFrame
    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    # The baseline's standardised residuals, which the isolation forest scored: enough to
    # explain its score afterwards (:meth:`IsolationForestDetector.contributions`).
    residuals: pd.DataFrame | None = None


class Ensemble(ParamsMixin):
    """Fit, score and stream every signal of a frame with the configured detector families.

    Parameters
    ----------
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> ``"up"``/``"down"``/``"both"``.
    families : tuple of str
        Which of ``FAMILIES`` to run (default ``DEFAULT_FAMILIES``); ``"seasonal"`` is always
        needed as the others use its residuals.
    transform, seasonality, bins_per_day, level_halflife, accept_points, band :
        Passed to :class:`~detector.methods.seasonal.SeasonalBaseline`.
    window : int
        Points in the level-shift and isolation-forest windows.
    horizon : float
        Seconds of normal data the calibration refers to (see :mod:`detector.calibration`).
    enter, leave, min_points :
        Hysteresis of the ``anomalous`` decision.
    random_state : int
        Seed for the isolation forest.

    Examples
    --------
    >>> idx = pd.date_range("2026-01-05", periods=3000, freq="5min")
    >>> rng = np.random.default_rng(1)
    >>> frame = pd.DataFrame({"latency": 1 + 0.05 * rng.normal(size=3000)}, index=idx)
    >>> model = Ensemble(directions="up").fit(frame.iloc[:2500])
    >>> spike = frame.iloc[2500:2510].copy()
    >>> spike.iloc[5] = 3.0
    >>> out = model.score(spike)
    >>> bool(out.anomaly_score.iloc[5] > 0.99), bool(out.anomaly_score.iloc[0] < 0.5)
    (True, True)
    """

    def __init__(
        self,
        *,
        directions: Directions = "both",
        families: tuple[str, ...] = DEFAULT_FAMILIES,
        transform: str = "none",
        seasonality: str = "auto",
        bins_per_day: int = 24,
        level_halflife: float | str = "auto",
        accept_points: int = 3,
        band: float = 3.0,
        window: int = 8,
        horizon: float = DAY_S,
        enter: float = 0.95,
        leave: float = 0.5,
        min_points: int = 1,
        random_state: int = 0,
    ) -> None:
        self.directions = directions
        self.families = families
        self.transform = transform
        self.seasonality = seasonality
        self.bins_per_day = bins_per_day
        self.level_halflife = level_halflife
        self.accept_points = accept_points
        self.band = band
        self.window = window
        self.horizon = horizon
        self.enter = enter
        self.leave = leave
        self.min_points = min_points
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_directions(self.directions)
        for family in self.families:
            check_choice("families", family, FAMILIES)
        if "seasonal" not in self.families:
            raise ValueError("families must include 'seasonal': the others score its residuals")
        check_range("horizon", self.horizon, 0.0, math.inf, closed="neither")
        Hysteresis(enter=self.enter, leave=self.leave, min_points=self.min_points)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> Self:
        """Fit every family on ``frame`` and calibrate their scores on it."""
        self._validate_params()
        frame = check_frame(frame)
        if frame.shape[0] < 3:
            raise ValueError(f"need at least 3 rows to fit, got {frame.shape[0]}")
        self.signals_ = list(frame.columns)
        self.baseline_ = SeasonalBaseline(
            directions=self.directions,
            transform=self.transform,
            seasonality=self.seasonality,
            bins_per_day=self.bins_per_day,
            level_halflife=self.level_halflife,
            accept_points=self.accept_points,
            band=self.band,
        ).fit(frame)
        z = self.baseline_.train_decomposition_.z
        self.members_: dict[str, Any] = {}
        if "levelshift" in self.families:
            self.members_["levelshift"] = LevelShiftDetector(
                window=self.window, directions=self.directions
            ).fit(self.baseline_.train_decomposition_.z_slow)
        if "iforest" in self.families:
            self.members_["iforest"] = IsolationForestDetector(
                window=self.window, directions=self.directions, random_state=self.random_state
            ).fit(z)
        step = float(np.median(np.diff(seconds(frame.index)))) if frame.shape[0] > 1 else 1.0
        self.step_s_ = max(step, 1e-3)
        raw = self._raw_training_scores()
        # Each (signal, family) is one more chance of a false alarm: calibrating every one against
        # the horizon times their number keeps the overall rate what one threshold promises.
        n_tests = sum(scores.shape[1] for scores in raw.values())
        horizon_points = max(self.horizon / self.step_s_, 1.0) * n_tests
        # The tracker's first rows have no history yet; their scores would inflate the tails.
        skip = min(frame.shape[0] // 5, 50)
        self.calibrators_: dict[tuple[str, str], TailCalibrator] = {}
        for family, scores in raw.items():
            for column in scores.columns:
                cal = TailCalibrator().fit(
                    scores[column].to_numpy()[skip:], horizon_points=horizon_points
                )
                self.calibrators_[(column, family)] = cal
        self.training_end_ = frame.index[-1]
        self.training_start_ = frame.index[0]
        self.hysteresis_ = {
            name: Hysteresis(enter=self.enter, leave=self.leave, min_points=self.min_points)
            for name in [*self.signals_, OVERALL]
        }
        return self

    def _raw_training_scores(self) -> dict[str, pd.DataFrame]:
        out = {"seasonal": self.baseline_.train_scores_}
        out.update({name: member.train_scores_ for name, member in self.members_.items()})
        return out

    def compact(self) -> Self:
        """Drop what only fitting needed; scores and decisions stay the same.

        The training residuals and raw training scores go, and each calibrator keeps only the
        scores that can still matter (:meth:`~detector.calibration.TailCalibrator.compact`):
        a model then costs kilobytes per signal instead of the size of its training data.
        """
        if not hasattr(self, "baseline_"):
            raise NotFittedError("Ensemble is not fitted yet; call fit() first")
        for detector in (self.baseline_, *self.members_.values()):
            for name in ("train_decomposition_", "train_scores_"):
                if hasattr(detector, name):
                    delattr(detector, name)
        for cal in self.calibrators_.values():
            cal.compact()
        return self

    def carry_decisions(self, previous: Ensemble) -> None:
        """Continue the ``anomalous`` decisions of the model this one replaces."""
        for name, hyst in self.hysteresis_.items():
            if name in previous.hysteresis_:
                hyst.state = previous.hysteresis_[name].state

    # -- scoring ------------------------------------------------------------------------------
    def score(self, frame: pd.DataFrame) -> EnsembleScores:
        """Score rows that follow the training data, without changing the model."""
        return self._score(frame, advance=False)

    def update(self, frame: pd.DataFrame) -> EnsembleScores:
        """Score new rows and keep the streaming state (levels, windows, decisions)."""
        return self._score(frame, advance=True)

    def _score(self, frame: pd.DataFrame, *, advance: bool) -> EnsembleScores:
        if not hasattr(self, "baseline_"):
            raise NotFittedError("Ensemble is not fitted yet; call fit() first")
        frame = check_frame(frame).reindex(columns=self.signals_)
        dec = self.baseline_.decompose(frame, advance=advance)
        raw = {"seasonal": self.baseline_.scores_from(dec.z)}
        for name, member in self.members_.items():
            z = dec.z_slow if name == "levelshift" else dec.z
            raw[name] = member.update(z) if advance else member.score(z)
        # (rows, columns) per family, then the per-signal maximum across families: plain arrays,
        # since per-column pandas operations dominate when many signals are scored at once.
        blocks, keys = [], []
        for family, scores in raw.items():
            arr = scores.to_numpy()
            blocks.append(
                np.column_stack(
                    [
                        self.calibrators_[(column, family)].transform(arr[:, j])
                        for j, column in enumerate(scores.columns)
                    ]
                )
            )
            keys += [(column, family) for column in scores.columns]
        matrix = np.hstack(blocks)
        detector_scores = pd.DataFrame(
            matrix, index=frame.index, columns=pd.MultiIndex.from_tuples(keys)
        )
        n = len(self.signals_)
        per_signal = blocks[0][:, :n].copy()
        for family, block in zip(raw, blocks, strict=True):
            if family != "iforest":
                np.maximum(per_signal, block, out=per_signal)
        signal_scores = pd.DataFrame(per_signal, index=frame.index, columns=self.signals_)
        overall = pd.Series(matrix.max(axis=1), index=frame.index)
        hyst = self.hysteresis_ if advance else _copy_hysteresis(self.hysteresis_)
        decided = [hyst[name].decide(per_signal[:, j]) for j, name in enumerate(self.signals_)]
        signal_anomalous = pd.DataFrame(
            np.column_stack(decided), index=frame.index, columns=self.signals_
        )
        return EnsembleScores(
            anomaly_score=overall.rename("anomaly_score"),
            anomalous=pd.Series(
                hyst[OVERALL].decide(overall.to_numpy()), index=frame.index, name="anomalous"
            ),
            signal_scores=signal_scores,
            signal_anomalous=signal_anomalous,
            detector_scores=detector_scores,
            actual=frame,
            expected=dec.expected,
            lower=dec.lower,
            upper=dec.upper,
            residuals=dec.z,
        )


def _copy_hysteresis(hyst: dict[str, Hysteresis]) -> dict[str, Hysteresis]:
    out = {}
    for name, h in hyst.items():
        copy = Hysteresis(enter=h.enter, leave=h.leave, min_points=h.min_points)
        copy.state = h.state
        out[name] = copy
    return out
