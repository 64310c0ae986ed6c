"""Sustained shifts: how far recent windows of minutes to hours sit from the slow expectation.

The point and level-shift families score residuals against the fast level tracker, which accepts a
new level after a few points: they mark where a change starts. An operator also needs to know that
latency is still 1.4 times its usual value forty minutes later, and a slow drift never makes any
single step remarkable. This family scores windows of several lengths (5 minutes, 20 minutes and an
hour by default) of the residuals against the *slow* tracker, the expectation and band an operator
sees, which follows a new level only over hours or after the acceptance horizon. Its score stays
high while the signal stays away from its band, and it does not re-arm while the deviation lasts.

Each window's statistic is standardised by its own spread on the training data, measured rather
than assumed: the residuals of real series are correlated (the day's traffic is a little higher
than usual all morning), so the mean of an hour varies more than an hour of independent noise
would. Ratio columns are scored from their summed counts (:func:`~detector.core.families.counts.
normal_score` of the events seen and expected in the window), which is what sees 4 % of failures
held for ten minutes at one request per second. The family's raw score is the largest
standardised window statistic in the alert direction; beside it, ``keep`` tells whether a
deviation is still there: the shortest window's statistic, while the last two minutes are at least
one deviation out in the same direction (so an event ends when the signal is back, not when the
window has forgotten the incident). That is what keeps an event open while the signal stays away
from its band.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from detector.core.base import (
    BaseDetector,
    Directions,
    apply_directions,
    check_directions,
    check_range,
)
from detector.core.families.counts import normal_score
from detector.core.features import Window
from detector.core.robust import MAD_TO_SIGMA
from detector.core.timeutil import DAY_S, seconds

if TYPE_CHECKING:
    from detector.core.families.decomposition import Decomposition, Parts

__all__ = ["PARTS", "SustainedShift"]

# The columns of the frame this family scores: one block per part, each with every signal.
PARTS = ("u", "events", "means")
# Standardised window statistics beyond this are taken for incidents in the training data.
_INCIDENT = 6.0


class SustainedShift(BaseDetector):
    """Scores windows of slow residuals (``u``) and, for ratios, of counts (``events``, ``means``).

    The frame to fit and score has two column levels, ``(part, signal)`` with ``part`` in
    :data:`PARTS`; :meth:`parts` builds it from a baseline decomposition. So have the scores:
    ``("score", signal)`` is the family's raw score, ``("keep", signal)`` the shortest window's
    standardised statistic in the alert direction while the last ``recent`` seconds deviate.

    Parameters
    ----------
    horizons : tuple of float
        Window lengths in seconds; each becomes a number of rows at the training data's step
        (at least 2, repeats dropped).
    directions : str or dict
        Alert direction for every signal, or a mapping signal -> direction (default ``"both"``).
    clip : float
        A row of slow residuals counts for at most this many scales in a window.
    recent : float
        Seconds (at least one row) that must still deviate for ``keep`` to hold.
    min_windows, min_span : int, float
        A window length raises alarms only once the training data spans ``min_windows`` windows
        of it and ``min_span`` seconds: how far a window's mean strays on a normal day is learnt
        from several days (until then the family still tells whether a deviation lasts,
        ``keep``).

    Examples
    --------
    >>> idx = pd.date_range("2026-01-05", periods=400, freq="60s")
    >>> rng = np.random.default_rng(0)
    >>> u = pd.DataFrame({"a": rng.normal(size=400)}, index=idx)
    >>> nan = pd.DataFrame({"a": np.nan}, index=idx)
    >>> det = SustainedShift(horizons=(300.0,), directions="up", min_windows=1, min_span=0.0)
    >>> _ = det.fit(SustainedShift.parts(u.iloc[:300], nan.iloc[:300], nan.iloc[:300]))
    >>> shifted = u.iloc[300:] + 2.0
    >>> out = det.score(SustainedShift.parts(shifted, nan.iloc[300:], nan.iloc[300:]))
    >>> bool(out["score", "a"].iloc[10:].median() > 3.0)
    True
    """

    # A drift of hours in the training window fills percents of this family's rows, so its
    # tail is read from the 90th percentile on, where most exceedances are still ordinary.
    tail_quantile = 0.9

    def __init__(
        self,
        *,
        horizons: tuple[float, ...] = (300.0, 600.0, 1200.0, 3600.0),
        directions: Directions = "both",
        clip: float = 3.0,
        recent: float = 120.0,
        min_windows: int = 100,
        min_span: float = 3 * DAY_S,
    ) -> None:
        self.horizons = horizons
        self.directions = directions
        self.clip = clip
        self.recent = recent
        self.min_windows = min_windows
        self.min_span = min_span

    def _validate_params(self) -> None:
        if not len(self.horizons):
            raise ValueError("horizons must name at least one window length")
        for horizon in self.horizons:
            check_range("horizons", horizon, 0.0, np.inf, closed="neither")
        check_directions(self.directions)
        check_range("clip", self.clip, 0.0, np.inf, closed="neither")
        check_range("recent", self.recent, 0.0, np.inf)
        check_range("min_windows", self.min_windows, 1, 1e9)
        check_range("min_span", self.min_span, 0.0, np.inf)

    @staticmethod
    def parts(u: pd.DataFrame, events: pd.DataFrame, means: pd.DataFrame) -> pd.DataFrame:
        """The frame this family reads: slow residuals, and counts seen and expected (ratios)."""
        return pd.concat(dict(zip(PARTS, (u, events, means), strict=True)), axis=1)

    def training_inputs(self, decomposition: Decomposition) -> pd.DataFrame:
        """:meth:`parts` of a baseline decomposition."""
        dec = decomposition
        return SustainedShift.parts(dec.u, dec.events, dec.means)

    def inputs(self, parts: Parts) -> np.ndarray:
        """The same as arrays: the parts side by side, each with every signal."""
        return self._checked(np.hstack([parts.u, parts.events, parts.means]))

    def restrict_alarms(self, alarms: np.ndarray) -> None:
        """Which signals may raise alarms of their own (a bool per signal); the others only
        keep events open (``keep``). The ensemble silences signals whose seasonal profile swings
        too far for an expectation hours ahead to hold."""
        self._check_fitted()
        self.alarms_ = np.asarray(alarms, dtype=bool)

    @property
    def alarm_columns_(self) -> list[str]:
        """The signals: one ``score`` column each."""
        return list(self.signals_)

    def alarm_scores(self, scores: np.ndarray) -> np.ndarray:
        """The ``score`` columns, zero for signals whose alarms are restricted."""
        return scores[:, : len(self.signals_)] * self.alarms_

    def holds(self, scores: np.ndarray) -> np.ndarray:
        """The ``keep`` columns: the shortest window's deviation while the last rows deviate."""
        return scores[:, len(self.signals_) :]

    def _fit_model(self, frame: pd.DataFrame) -> Window:
        self.signals_ = list(frame["u"].columns)
        self.input_columns_ = pd.MultiIndex.from_product([PARTS, self.signals_])
        self.output_columns_ = pd.MultiIndex.from_product([("score", "keep"), self.signals_])
        self.alarms_ = np.ones(len(self.signals_), dtype=bool)
        t = seconds(frame.index)
        step = float(np.median(np.diff(t))) if t.size > 1 else min(self.horizons)
        rows = sorted({max(2, round(h / max(step, 1e-9))) for h in self.horizons})
        self.rows_ = np.array(rows, dtype=np.int64)
        self.recent_rows_ = max(1, round(self.recent / max(step, 1e-9)))
        span = float(t[-1] - t[0]) if t.size else 0.0
        self.alarming_ = (self.rows_ * step * self.min_windows <= span) & (span >= self.min_span)
        self.scale_ = np.ones((len(rows), len(self.signals_)))
        window = self._window()
        stats = self._statistics(frame.reindex(columns=self.input_columns_).to_numpy(), window)
        # Spread of each window statistic on normal data; the first windows are not full yet.
        settle = stats[: len(rows), int(self.rows_[-1]) :, :]
        has = np.isfinite(settle).any(axis=1)
        if has.any():
            # The MAD, not a high quantile: a drift of hours in the training window fills
            # several percent of its windows.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no data yet
                dev = np.abs(settle - np.nanmedian(settle, axis=1, keepdims=True))
                spread = MAD_TO_SIGMA * np.nanmedian(dev, axis=1)
            self.scale_ = np.where(has, np.maximum(np.nan_to_num(spread, nan=1.0), 1.0), 1.0)
        # The training scores reuse these statistics, now standardised, and continue from their
        # window.
        stats[: len(rows)] /= self.scale_[:, None, :]
        self._training = (stats, window)
        return self._window()

    def _run_training(self, frame: pd.DataFrame, state: Window) -> tuple[pd.DataFrame, Window]:
        stats, window = self._training
        del self._training
        scores = self._scores(stats)
        # Rows far outside the normal range are incidents inside the training window: left out
        # (NaN) of what the calibration learns, or a past drift would make the next look normal.
        gross = (np.abs(np.nan_to_num(stats[: self.rows_.size])) > _INCIDENT).any(axis=0)
        n = len(self.signals_)
        scores[:, :n] = np.where(gross, np.nan, scores[:, :n])
        return pd.DataFrame(scores, index=frame.index, columns=self.output_columns_), window

    def _window(self) -> Window:
        return Window(len(PARTS) * len(self.signals_), max(int(self.rows_[-1]), self.recent_rows_))

    def _statistics(self, values: np.ndarray, window: Window) -> np.ndarray:
        """Window statistics, (horizons + 1, rows, signals); NaN without any value.

        The horizons' are standardised by ``scale_``; the last, over the ``recent`` rows, is not.
        """
        n = len(self.signals_)
        rows_new = values.shape[0]
        full = window.extend(values)
        u, events, means = full[:, :n], full[:, n : 2 * n], full[:, 2 * n :]
        ratio = np.isfinite(events) & np.isfinite(means)
        present = np.isfinite(u)
        zero = np.zeros((1, n))

        def csum(values: np.ndarray) -> np.ndarray:
            return np.vstack([zero, np.cumsum(values, axis=0)])

        # Each row counts for at most ``clip`` scales: a lasting shift is many rows away from
        # the expectation, not one spike (which the point family reports) in a quiet window.
        clipped = np.clip(np.where(present, u, 0.0), -self.clip, self.clip)
        sums = [csum(clipped), csum(present.astype(np.float64))]
        # Counts are bounded for the running totals as residuals are (an absurd rate x step).
        seen, expected = (np.clip(np.where(ratio, c, 0.0), 0.0, 1e12) for c in (events, means))
        sums += [csum(seen), csum(expected)]
        sums.append(csum(ratio.astype(np.float64)))
        end = np.arange(full.shape[0] - rows_new, full.shape[0]) + 1
        sizes = [*self.rows_.tolist(), self.recent_rows_]
        out = np.full((len(sizes), rows_new, n), np.nan)
        for h, size in enumerate(sizes):
            start = np.maximum(end - size, 0)
            total, count, seen, expected, counted = (c[end] - c[start] for c in sums)
            with np.errstate(invalid="ignore", divide="ignore"):
                stat = np.where(count > 0, total / np.sqrt(count), np.nan)
            as_counts = counted > 0
            if as_counts.any():
                stat[as_counts] = normal_score(seen[as_counts], expected[as_counts])
            out[h] = stat / self.scale_[h] if h < self.rows_.size else stat
        return out

    def _step(self, values: np.ndarray, state: Window) -> tuple[np.ndarray, Window]:
        return self._scores(self._statistics(values, state)), state

    def _scores(self, stats: np.ndarray) -> np.ndarray:
        """``score`` then ``keep`` columns, each with every signal (``output_columns_``)."""
        directed = [apply_directions(part, self.directions, self.signals_) for part in stats]
        keep = np.where(directed[-1] >= 1.0, directed[0], 0.0)
        scores = np.zeros_like(keep)
        for h in np.flatnonzero(self.alarming_):
            np.maximum(scores, directed[h], out=scores)
        return np.hstack([scores, keep])
