"""Seasonal baseline: STL profiles keyed by wall-clock phase, a robust level tracker, robust scales.

The model for one signal is ``x(t) = level(t) + season(phase(t)) + noise``. ``fit`` aggregates the
training data into fixed wall-clock bins (medians, so single spikes do not bend the profile),
runs statsmodels' STL on that short regular series and keeps the seasonal component as a table
indexed by time of day (or of week). Online, a Huber-clipped exponential tracker follows the level,
so an outlier moves it little while a slow drift is followed; a shift that persists for
``accept_points`` becomes the new level, as an operator would accept a new normal. Residuals are
scaled by a MAD per time-of-day bin, shrunk towards the global MAD and floored so that a zero MAD
(ratios that are mostly 0, flat series) never turns noise into alarms. Ratios of counts (error
ratios) are scored as counts instead (:mod:`detector.core.families.counts`), with the trials behind
each row given (a denominator) or inferred from the ratio's spread by time of day.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
import pandas as pd

from detector.core.base import (
    BaseDetector,
    Directions,
    check_choice,
    check_directions,
    check_frame,
    check_range,
    directional_scores,
)
from detector.core.families.counts import fit_counts, normal_score, ratio_columns
from detector.core.families.decomposition import Decomposition, Parts
from detector.core.families.seasonal_fit import (
    choose_period,
    log_offset,
    phase_scales,
    seasonal_profile,
    trials_array,
    winsorised,
)
from detector.core.families.seasonal_models import SeasonalFit, StackedModels
from detector.core.load import LoadAdjustment, LoadEffect, check_explained_by
from detector.core.smoothing import Tracks, best_halflife, ewma_before, track_levels
from detector.core.timeutil import DAY_S, phase_lookup, seconds

__all__ = ["SeasonalBaseline"]

_SEASONALITIES = ("auto", "daily", "weekly", "none")
# A single event is never clipped by a ratio's level trackers: clipping it would bias the
# expected proportion of rare events towards 0.
_MIN_CLIP_EVENTS = 1.5


class SeasonalBaseline(BaseDetector):
    """Expected value, band and direction-aware score for each signal of a frame.

    Parameters
    ----------
    directions : str or dict
        ``"up"``, ``"down"`` or ``"both"`` for every signal, or a mapping signal -> direction
        (signals not named get ``"both"``).
    transform : {"auto", "log", "none"}
        ``"log"`` models ``log(x + c)`` (``c``: 5 % of the typical positive value); ``"auto"``
        does so for never-negative series; the default (as they are) served every corpus best.
    seasonality : {"auto", "daily", "weekly", "none"}
        ``"auto"`` uses a weekly profile with two weeks of data, a daily one with two days, and
        none otherwise; the choice and the reason are kept in ``seasonality_``.
    bins_per_day : int
        Resolution of the wall-clock profile and of the per-phase scales.
    min_strength : float
        Seasonal strength (1 - var(remainder) / var(seasonal + remainder)) below which the profile
        is dropped as noise.
    level_halflife : float or "auto"
        Seconds for the level tracker to move half-way to a new level within the clip;
        ``"auto"`` picks, per signal, the exponential smoothing that best predicts the next
        training point (the optimal tracker for a local-level model), so a wandering series is
        followed closely and a noisy stationary one smoothly.
    clip : float
        Residuals are clipped to this many scales before they move the level.
    accept_points : int
        Consecutive points outside the clip, on the same side, after which the fast tracker takes
        their mean as its new level: the score marks where a shift starts, then re-arms for the
        next change instead of repeating the same alarm.
    slow_halflife, slow_accept_after : float
        The same for the slow tracker behind the expected value and band: an operator sees a
        shift against the usual level for hours after the score has marked its onset.
    band : float
        Half-width of the expected band, in scales.
    ratios : {"auto", "none"}
        ``"auto"`` scores columns that look like proportions of rare events (all values in
        [0, 1], many exact zeros) as counts; columns given ``trials`` at ``fit`` always are.
    explained_by, load_mode :
        Which columns' expectations follow which load signals, and how (multiplied or shifted):
        :class:`~detector.core.load.LoadAdjustment`; None: time of day only.

    Examples
    --------
    >>> idx = pd.date_range("2026-01-05", periods=2000, freq="5min")
    >>> values = 10 + np.sin(np.arange(2000) * 2 * np.pi / 288)
    >>> frame = pd.DataFrame({"rps": values}, index=idx)
    >>> model = SeasonalBaseline(directions="up").fit(frame)
    >>> model.seasonality_["rps"]
    'daily'
    """

    def __init__(
        self,
        *,
        directions: Directions = "both",
        transform: str = "none",
        seasonality: str = "auto",
        bins_per_day: int = 24,
        min_strength: float = 0.2,
        level_halflife: float | str = "auto",
        clip: float = 3.0,
        accept_points: int = 3,
        slow_halflife: float = 6 * 3600.0,
        slow_accept_after: float = 2 * 3600.0,
        band: float = 3.0,
        ratios: str = "auto",
        explained_by: Mapping[str, Sequence[str]] | str | None = None,
        load_mode: str = "auto",
    ) -> None:
        self.directions = directions
        self.transform = transform
        self.seasonality = seasonality
        self.bins_per_day = bins_per_day
        self.min_strength = min_strength
        self.level_halflife = level_halflife
        self.clip = clip
        self.accept_points = accept_points
        self.slow_halflife = slow_halflife
        self.slow_accept_after = slow_accept_after
        self.band = band
        self.ratios = ratios
        self.explained_by = explained_by
        self.load_mode = load_mode

    def _validate_params(self) -> None:
        check_choice("transform", self.transform, ("auto", "log", "none"))
        check_choice("seasonality", self.seasonality, _SEASONALITIES)
        check_range("bins_per_day", self.bins_per_day, 4, 288)
        check_range("min_strength", self.min_strength, 0.0, 1.0)
        if self.level_halflife != "auto":
            check_range("level_halflife", self.level_halflife, 0.0, math.inf, closed="neither")
        check_range("clip", self.clip, 0.0, math.inf, closed="neither")
        check_range("accept_points", self.accept_points, 1, 1e9)
        check_range("slow_halflife", self.slow_halflife, 0.0, math.inf, closed="neither")
        check_range("slow_accept_after", self.slow_accept_after, 0.0, math.inf, closed="left")
        check_range("band", self.band, 0.0, math.inf, closed="neither")
        check_choice("ratios", self.ratios, ("auto", "none"))
        check_directions(self.directions)
        check_explained_by(self.explained_by)
        check_choice("load_mode", self.load_mode, ("auto", "ratio", "shift"))

    @property
    def models_(self) -> dict[str, SeasonalFit]:
        """What was learned about each signal (a view of ``stacked_``)."""
        return {name: self.stacked_.model(j) for j, name in enumerate(self.signals_)}

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on a training frame; ``trials`` gives the requests behind ratio columns' rows.

        ``trials`` has the frame's index and some of its columns (NaN where unknown); every
        column it holds is scored as a ratio of counts. ``covariates``: load signals that
        ``explained_by`` names and the frame lacks.
        """
        self._validate_params()
        frame = check_frame(frame)
        initial = self._fit_model(frame, trials, covariates)
        self.initial_state_ = copy.deepcopy(initial)
        self.train_decomposition_, self.state_ = self._decompose(frame, initial, trials, covariates)
        self.train_scores_ = self.scores_from(self.train_decomposition_.z)
        return self

    def _fit_model(
        self,
        frame: pd.DataFrame,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> list[Tracks]:
        t_all = seconds(frame.index)
        self.signals_ = list(frame.columns)
        values = raw = frame.to_numpy()
        given = self._trials(frame, trials)
        is_ratio = ratio_columns(values, t_all, given, auto=self.ratios == "auto")
        # Load-aware columns are modelled as they would be at the typical load.
        load = LoadAdjustment()
        self.load_ = load.fit(frame, covariates, self.explained_by, is_ratio, self.load_mode)
        effect = self.load_.effects(frame, covariates)
        if effect is not None:
            values = effect.to_typical(values)
        models = []
        for j in range(values.shape[1]):
            ok = np.isfinite(values[:, j])
            models.append(self._fit_signal(t_all[ok], values[ok, j], ratio=bool(is_ratio[j])))
        self.stacked_ = StackedModels.stack(models)
        self.seasonality_ = dict(zip(self.signals_, self.stacked_.seasonality, strict=True))
        step = float(np.median(np.diff(t_all))) if t_all.size > 1 else 1.0
        self.counts_ = fit_counts(
            t_all, values, given, ratios=is_ratio, bins=int(self.bins_per_day), step_s=step
        )
        # Bands of signals that never go below 0 (latency, ratios, rates) stop at 0.
        finite = np.isfinite(raw)
        self.nonnegative_ = ~(finite & (np.where(finite, raw, 0.0) < 0.0)).any(axis=0)
        # The fast and the slow tracker of every signal. A ratio's start at its training
        # proportion: its first value (0, or one event in a dozen) is no estimate of it.
        trackers = [Tracks.start(len(models)), Tracks.start(len(models))]
        for tracks in trackers:
            tracks.level[self.counts_.columns] = self.counts_.mean
            tracks.last_t[self.counts_.columns] = t_all[0] if t_all.size else np.nan
        return trackers

    def _trials(self, frame: pd.DataFrame, trials: pd.DataFrame | None) -> np.ndarray | None:
        """``trials`` as an array in the frame's rows and columns (NaN where not given)."""
        return None if trials is None else trials_array(frame, trials)

    def _fit_signal(self, t: np.ndarray, raw: np.ndarray, *, ratio: bool = False) -> SeasonalFit:
        bins = int(self.bins_per_day)
        # A ratio of counts is modelled as it is, at one proportion all day: its night-time
        # medians (0) would draw a daily profile that only says nights have fewer requests.
        offset = math.nan if ratio else log_offset(raw, self.transform)
        if self.transform == "log" and math.isnan(offset) and not ratio:
            raise ValueError("transform='log' needs positive values in every signal")
        x = raw if math.isnan(offset) else np.log(np.maximum(raw + offset, 1e-300))
        if x.size < 8:
            ones = np.ones(bins)
            halflife = self._fixed_halflife(DAY_S / bins)
            how = f"none ({x.size} points)"
            return SeasonalFit(np.zeros(0), 0.0, ones, ones, how, halflife, offset)
        width = DAY_S / bins
        step = float(np.median(np.diff(t))) if x.size > 1 else width
        span = float(t[-1] - t[0])
        profile, period, how = np.zeros(0), 0.0, "none"
        if ratio:
            how = "none (a ratio of counts: one proportion all day)"
        elif self.seasonality != "none":
            period, how = choose_period(self.seasonality, span, step)
        if period:
            profile, how = seasonal_profile(
                t,
                x,
                step,
                period,
                how,
                bins_per_day=bins,
                min_strength=self.min_strength,
            )
            if profile.size == 0:
                period = 0.0
        deseason = x - phase_lookup(profile, period, t) if period else x
        # The smoothers below are linear: one absurd value (1e6 in a series of tens) would
        # leave its trace in hours of residuals, and so in the scales. Winsorised for them.
        deseason = winsorised(deseason)
        if self.level_halflife == "auto":
            halflife = best_halflife(deseason) * step
        else:
            halflife = float(self.level_halflife)
        # The trackers' first points have no history; leave them out of the scale estimates.
        settle = min(x.size // 5, 50)
        typical = float(np.median(np.abs(x)))
        scales = []
        for hl in (halflife, max(halflife, self.slow_halflife)):
            resid = deseason - ewma_before(deseason, hl / step)
            scales.append(phase_scales(t[settle:], resid[settle:], bins, typical))
        return SeasonalFit(profile, period, *scales, how, halflife, offset)

    # -- scoring ------------------------------------------------------------------------------
    def _fixed_halflife(self, step: float) -> float:
        return step if self.level_halflife == "auto" else float(self.level_halflife)

    def _decompose(
        self,
        frame: pd.DataFrame,
        state: list[Tracks],
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> tuple[Decomposition, list[Tracks]]:
        parts, state = self._parts(frame, state, trials, covariates)
        return parts.frames(frame.index, pd.Index(self.signals_)), state

    def load_effects(
        self, frame: pd.DataFrame, covariates: pd.DataFrame | None = None
    ) -> LoadEffect | None:
        """What the load of ``frame``'s rows does to each signal; None without a load model."""
        load = getattr(self, "load_", None)  # models saved before load-aware expectations
        return None if load is None else load.effects(frame, covariates)

    def _parts(
        self,
        frame: pd.DataFrame,
        state: list[Tracks],
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
    ) -> tuple[Parts, list[Tracks]]:
        """Residuals, expectation and band of the rows (long: one pass over every signal at
        once in arrays; with many signals and few rows, per-signal calls would dominate)."""
        t = seconds(frame.index)
        models, counts = self.stacked_, self.counts_
        frame = frame.reindex(columns=self.signals_)
        raw = frame.to_numpy()
        effect = self.load_effects(frame, covariates)
        if effect is not None:
            raw = effect.to_typical(raw)
        x = models.forward(raw)
        season = models.season(t)
        d = x - season
        fast, slow = state
        points = int(self.accept_points)
        s = phase_lookup(models.scale, DAY_S, t).T
        s_slow = phase_lookup(models.slow_scale, DAY_S, t).T
        ratio = counts.columns
        if ratio.size:
            given = self._trials(frame.reindex(columns=self.signals_), trials)
            n = counts.effective_trials(t, raw, None if given is None else given[:, ratio])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                sd = np.sqrt(np.maximum(counts.mean, counts.floor) * (1.0 - counts.mean) / n)
                s[:, ratio] = np.maximum(sd, _MIN_CLIP_EVENTS / n / self.clip)
            s_slow[:, ratio] = s[:, ratio]
        level = track_levels(t, d, self.clip * s, fast, models.halflife, points, 0.0)
        hl = np.maximum(models.halflife, self.slow_halflife)
        slow_level = track_levels(
            t, d, self.clip * s_slow, slow, hl, points, self.slow_accept_after
        )
        # A value near the float limit gives an infinite residual: as deviant as it gets.
        with np.errstate(over="ignore", invalid="ignore"):
            z = (d - level) / s
            u = (d - slow_level) / s_slow
        events = np.full(d.shape, np.nan)
        means = np.full(d.shape, np.nan)
        if ratio.size:
            s_slow[:, ratio] = sd
            with np.errstate(over="ignore", invalid="ignore"):
                events[:, ratio] = x[:, ratio] * n
            means[:, ratio] = n * np.maximum(slow_level[:, ratio], counts.floor)
            # Counts are scored against the slow expectation only: a fast tracker of a few
            # events per step settles on whatever the last quiet steps held (0 after a burst).
            u[:, ratio] = normal_score(events[:, ratio], means[:, ratio])
            z[:, ratio] = u[:, ratio]
        centre = slow_level + season
        lower = models.backward(centre - self.band * s_slow)
        lower = np.where(self.nonnegative_, np.maximum(lower, 0.0), lower)
        upper = models.backward(centre + self.band * s_slow)
        expected = models.backward(centre)
        factors = None
        if effect is not None:
            expected, lower, upper = (effect.at_load(v) for v in (expected, lower, upper))
            lower = np.where(self.nonnegative_, np.maximum(lower, 0.0), lower)
            factors = effect.factor
        return Parts(z, u, expected, lower, upper, events, means, factors), state

    def _run(self, frame: pd.DataFrame, state: list[Tracks]) -> tuple[pd.DataFrame, list[Tracks]]:
        dec, state = self._decompose(frame, state)
        return self.scores_from(dec.z), state

    def scores_from(self, z: pd.DataFrame) -> pd.DataFrame:
        """Direction-aware raw scores of signed standardised residuals."""
        return directional_scores(z, self.directions)

    def decomposition(
        self,
        frame: pd.DataFrame,
        *,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
        advance: bool,
    ) -> Parts:
        """Residuals, expectations and bands of a checked frame, as arrays (the ensemble's path,
        as :meth:`~detector.core.base.BaseDetector.run` is the families'); ``advance`` keeps
        the tracker state.

        ``trials`` are the requests behind ratio columns' rows, as at ``fit`` (NaN or absent:
        the trials inferred for the time of day).
        """
        parts, _ = self._parts(frame, self._state(advance), trials, covariates)
        return parts

    def decompose(
        self,
        frame: pd.DataFrame,
        *,
        trials: pd.DataFrame | None = None,
        covariates: pd.DataFrame | None = None,
        advance: bool = False,
    ) -> Decomposition:
        """:meth:`decomposition` of any time-indexed frame (checked first), as frames."""
        frame = check_frame(frame)
        parts = self.decomposition(frame, trials=trials, covariates=covariates, advance=advance)
        return parts.frames(frame.index, pd.Index(self.signals_))
