"""The ensemble the service runs: seasonal baseline, level shift and isolation forest, calibrated.

Every family's raw score is calibrated on the training data into ``anomaly_score`` in [0, 1]; a
signal's score is the largest of its families', the overall score the largest of all signals' and
the joint isolation forest's, so each alarm can be traced to the family and signal that raised it.
Hysteresis turns scores into the ``anomalous`` decision per signal and overall.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from detector.core.attribution import BatchAttribution
from detector.core.base import (
    BaseDetector,
    Directions,
    NotFittedError,
    ParamsMixin,
    check_choice,
    check_directions,
    check_frame,
    check_range,
)
from detector.core.calibration import calibrate_families
from detector.core.decide import decide, run_families, signal_maxima
from detector.core.defaults import DEFAULT_FAMILIES, FAMILIES
from detector.core.families.counts import denominator_trials
from detector.core.families.decomposition import Decomposition
from detector.core.families.deviation import SeasonalDeviation
from detector.core.families.iforest import JOINT, IsolationForestDetector
from detector.core.families.levelshift import LevelShiftDetector
from detector.core.families.seasonal import SeasonalBaseline
from detector.core.families.sustained import SustainedShift
from detector.core.hysteresis import Hysteresis, HysteresisGroup
from detector.core.refractory import Refractory
from detector.core.scores import EnsembleScores
from detector.core.timeutil import DAY_S, seconds

__all__ = ["JOINT", "OVERALL", "Ensemble"]

OVERALL = "overall"
_FAMILY_TYPES: dict[str, type[BaseDetector]] = {
    "seasonal": SeasonalDeviation,
    "levelshift": LevelShiftDetector,
    "sustained": SustainedShift,
    "iforest": IsolationForestDetector,
}


class Ensemble(ParamsMixin):
    """Fit, score and stream every signal of a frame with the configured detector families.

    Parameters
    ----------
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> ``"up"``/``"down"``/``"both"``.
    families : tuple of str
        Which of ``FAMILIES`` to run (default ``DEFAULT_FAMILIES``); ``"seasonal"`` is always
        needed as the others use its residuals.
    transform, seasonality, bins_per_day, level_halflife, accept_points, band, ratios, \
explained_by, load_mode
        Passed to :class:`~detector.core.families.seasonal.SeasonalBaseline`; latency-like
        signals are expected at the load of the row by default (:mod:`detector.core.load`).
    accept_after : float
        Seconds a new level must hold before the expectation and band accept it as normal;
        until then the sustained family keeps the signal anomalous.
    denominators : dict, optional
        Ratio signal -> request-rate signal of the same frame: the ratio is scored as counts,
        with the rate (per second) times the step as the requests behind each row.
    window : int
        Points in the level-shift and isolation-forest windows.
    horizons : tuple of float
        Window lengths, in seconds, of the sustained family.
    persist : float
        An open event stays open while the signal's shortest sustained window deviates at least
        this many standardised units in its alert direction, even once no family scores above
        ``leave``.
    max_profile_ratio : float
        The sustained family raises no alarm of its own (it still keeps events open) for a
        signal whose profile swings more than this many residual scales: a day unlike the
        training days (the first weekend) would read as hours of deviation.
    horizon : float
        Seconds of normal data the calibration refers to (see :mod:`detector.core.calibration`).
    enter, leave, min_points : hysteresis of the ``anomalous`` decision.
    refractory : int
        Rows after a signal's onset (a score at or above ``enter``) during which its repeats are
        held just below ``enter`` (:mod:`detector.core.refractory`); 0 turns it off.
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
        ratios: str = "auto",
        explained_by: Mapping[str, Sequence[str]] | str | None = "auto",
        load_mode: str = "auto",
        accept_after: float = 2 * 3600.0,
        denominators: dict[str, str] | None = None,
        window: int = 8,
        horizons: tuple[float, ...] = (300.0, 600.0, 1200.0, 3600.0),
        persist: float = 3.0,
        max_profile_ratio: float = 3.0,
        horizon: float = DAY_S,
        enter: float = 0.95,
        leave: float = 0.5,
        min_points: int = 1,
        refractory: int = 20,
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
        self.ratios = ratios
        self.explained_by = explained_by
        self.load_mode = load_mode
        self.accept_after = accept_after
        self.denominators = denominators
        self.window = window
        self.horizons = horizons
        self.persist = persist
        self.max_profile_ratio = max_profile_ratio
        self.horizon = horizon
        self.enter = enter
        self.leave = leave
        self.min_points = min_points
        self.refractory = refractory
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_directions(self.directions)
        for family in self.families:
            check_choice("families", family, FAMILIES)
        if "seasonal" not in self.families:
            raise ValueError("families must include 'seasonal': the others score its residuals")
        check_range("horizon", self.horizon, 0.0, math.inf, closed="neither")
        check_range("accept_after", self.accept_after, 0.0, math.inf)
        check_range("persist", self.persist, 0.0, math.inf, closed="neither")
        check_range("max_profile_ratio", self.max_profile_ratio, 0.0, math.inf, closed="neither")
        Hysteresis(enter=self.enter, leave=self.leave, min_points=self.min_points)
        check_range("refractory", self.refractory, 0, 1_000_000)

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> Self:
        """Fit every family on ``frame`` and calibrate their scores on it.

        ``trials`` optionally gives the requests behind the rows of ratio signals (see
        :meth:`~detector.core.families.seasonal.SeasonalBaseline.fit`); ``denominators`` are another
        way to say the same from the frame's own rate signals. ``covariates`` are load signals
        ``explained_by`` names that are not columns of the frame.
        """
        self._validate_params()
        frame = check_frame(frame)
        if frame.shape[0] < 3:
            raise ValueError(f"need at least 3 rows to fit, got {frame.shape[0]}")
        reserved = sorted({JOINT, OVERALL} & set(frame.columns))
        if reserved:
            # They name the joint family's column and the overall decision beside the signals.
            raise ValueError(f"signal names {reserved} are reserved; rename those columns")
        self.signals_ = list(frame.columns)
        step = float(np.median(np.diff(seconds(frame.index)))) if frame.shape[0] > 1 else 1.0
        self.step_s_ = max(step, 1e-3)
        self.baseline_ = SeasonalBaseline(
            directions=self.directions,
            transform=self.transform,
            seasonality=self.seasonality,
            bins_per_day=self.bins_per_day,
            level_halflife=self.level_halflife,
            accept_points=self.accept_points,
            band=self.band,
            ratios=self.ratios,
            slow_accept_after=self.accept_after,
            explained_by=self.explained_by,
            load_mode=self.load_mode,
        ).fit(frame, self._trials(frame, trials), covariates)
        dec = self.baseline_.train_decomposition_
        # Every family the same way, in the order of FAMILIES (the calibrators' column order).
        self.members_: dict[str, BaseDetector] = {
            name: self._fitted_family(name, dec) for name in FAMILIES if name in self.families
        }
        if "sustained" in self.members_:
            models = self.baseline_.stacked_
            swing = models.profile_spread() / np.median(models.slow_scale, axis=1)
            self.members_["sustained"].restrict_alarms(swing <= self.max_profile_ratio)
        self._calibrate(frame.shape[0])
        self.training_end_ = frame.index[-1]
        self.training_start_ = frame.index[0]
        self._decisions()
        return self

    def _calibrate(self, rows: int) -> None:
        """One calibrator per (signal or joint column, family), on the training scores."""
        raw = {n: m.alarm_scores(m.train_scores_.to_numpy()) for n, m in self.members_.items()}
        # Each (signal, family) is one more chance of a false alarm: calibrating every one against
        # the horizon times their number keeps the overall rate what one threshold promises.
        n_tests = sum(scores.shape[1] for scores in raw.values())
        horizon_points = max(self.horizon / self.step_s_, 1.0) * n_tests
        # The tracker's first rows have no history yet; their scores would inflate the tails.
        skip = min(rows // 5, 50)
        # Ratios are scored as counts against a Poisson model: their scores are normal scores,
        # and so is the tail beyond what training showed.
        counted = {self.signals_[j] for j in self.baseline_.counts_.columns}
        self.calibrators_ = calibrate_families(self.members_, raw, counted, horizon_points, skip)
        self.family_columns_ = pd.MultiIndex.from_tuples(self.calibrators_.labels)

    def _decisions(self) -> None:
        """The hysteresis per signal and overall, the refractory periods per unit."""
        # The refractory periods run per signal, and for each joint (cross-signal) column.
        joint = [label[0] for label in self.calibrators_.labels if label[0] not in self.signals_]
        units = {name: j for j, name in enumerate(dict.fromkeys([*self.signals_, *joint]))}
        self.column_units_ = np.array(
            [units[label[0]] for label in self.calibrators_.labels], dtype=np.int64
        )
        self.refractory_ = Refractory(list(units), enter=self.enter, points=self.refractory)
        self.hysteresis_ = HysteresisGroup(
            [*self.signals_, OVERALL],
            enter=self.enter,
            leave=self.leave,
            min_points=self.min_points,
        )

    def _trials(self, frame: pd.DataFrame, trials: pd.DataFrame | None) -> pd.DataFrame | None:
        """Explicit ``trials``, with those the ``denominators`` give from the frame on top."""
        if not self.denominators:
            return trials
        return denominator_trials(frame, self.denominators, self.step_s_, trials)

    def _fitted_family(self, name: str, decomposition: Decomposition) -> BaseDetector:
        """The family ``name`` with the ensemble's parameters for it, fitted."""
        params: dict[str, Any] = {
            "seasonal": {},
            "levelshift": {"window": self.window},
            "sustained": {"horizons": self.horizons},
            "iforest": {"window": self.window, "random_state": self.random_state},
        }[name]
        family = _FAMILY_TYPES[name](directions=self.directions, **params)
        return family.fit(family.training_inputs(decomposition))

    def explained_signals(self) -> dict[str, tuple[str, ...]]:
        """Signals expected at the load of the row, with the load signals that explain them."""
        load = getattr(self.baseline_, "load_", None)  # models saved before load-aware ones
        return {} if load is None else load.explained(self.signals_)

    def compact(self) -> Self:
        """Drop what only fitting needed; scores and decisions stay the same.

        The training residuals and raw training scores go, and each calibrator keeps only the
        scores that can still matter: kilobytes per signal, not the size of its training data.
        """
        if not hasattr(self, "baseline_"):
            raise NotFittedError("Ensemble is not fitted yet; call fit() first")
        for detector in (self.baseline_, *self.members_.values()):
            for name in ("train_decomposition_", "train_scores_"):
                if hasattr(detector, name):
                    delattr(detector, name)
        self.calibrators_.compact()
        return self

    def carry_decisions(self, previous: Ensemble) -> None:
        """Continue the ``anomalous`` decisions and refractory periods of the model replaced."""
        self.hysteresis_.carry(previous.hysteresis_)
        self.refractory_.carry(previous.refractory_)

    def _frame(self, values: np.ndarray, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(values, index=index, columns=self.signals_)

    # -- scoring ------------------------------------------------------------------------------
    def score(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> EnsembleScores:
        """Score rows that follow the training data, without changing the model."""
        return self._score(frame, trials, covariates, advance=False)

    def update(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> EnsembleScores:
        """Score new rows and keep the streaming state (levels, windows, decisions)."""
        return self._score(frame, trials, covariates, advance=True)

    def _score(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None,
        covariates: pd.DataFrame | None,
        *,
        advance: bool,
    ) -> EnsembleScores:
        if not hasattr(self, "baseline_"):
            raise NotFittedError("Ensemble is not fitted yet; call fit() first")
        # The load columns a backtest frame holds besides the signals stay readable as covariates.
        frame = check_frame(frame)
        if covariates is None and not frame.columns.equals(pd.Index(self.signals_)):
            covariates = frame
        frame = frame.reindex(columns=self.signals_)
        trials = self._trials(frame, trials)
        # A joint family's explanations start from its state before the batch.
        explained = next(((k, m) for k, m in self.members_.items() if m.joint), None)
        before = copy.deepcopy(explained[1].state_) if explained is not None else None
        parts = self.baseline_.decomposition(
            frame, trials=trials, covariates=covariates, advance=advance
        )
        raw, keep = run_families(self.members_, parts, self.persist, advance=advance)
        # Plain arrays from here on: per-column pandas operations dominate when many signals are
        # scored at once. Columns follow the calibrators: each family's, in family order.
        matrix = self.calibrators_.transform(np.hstack(list(raw.values())))
        n = len(self.signals_)
        per_signal = signal_maxima(matrix, raw, self.members_, n)
        decided, held = decide(
            matrix,
            per_signal,
            keep,
            hysteresis=self.hysteresis_,
            refractory=self.refractory_,
            column_units=self.column_units_,
            enter=self.enter,
            leave=self.leave,
            advance=advance,
        )
        cap = self.refractory_.cap
        matrix = np.where(held[:, self.column_units_], np.minimum(matrix, cap), matrix)
        per_signal = np.where(held[:, :n], np.minimum(per_signal, cap), per_signal)
        family_scores = pd.DataFrame(matrix, index=frame.index, columns=self.family_columns_)
        overall = matrix.max(axis=1)
        return EnsembleScores(
            anomaly_score=pd.Series(overall, index=frame.index, name="anomaly_score"),
            anomalous=pd.Series(decided[:, n], index=frame.index, name="anomalous"),
            signal_scores=pd.DataFrame(per_signal, index=frame.index, columns=self.signals_),
            signal_anomalous=pd.DataFrame(decided[:, :n], index=frame.index, columns=self.signals_),
            family_scores=family_scores,
            actual=frame,
            expected=self._frame(parts.expected, frame.index),
            lower=self._frame(parts.lower, frame.index),
            upper=self._frame(parts.upper, frame.index),
            load_factor=None if parts.factors is None else self._frame(parts.factors, frame.index),
            explained_by=self.explained_signals(),
            attribution=None
            if explained is None
            else BatchAttribution(*explained, before, self._frame(parts.z, frame.index)),
        )
