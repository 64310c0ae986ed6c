"""Seasonal baseline: STL profiles keyed by wall-clock phase, a robust level tracker, robust scales.

The model for one signal is ``x(t) = level(t) + season(phase(t)) + noise``. ``fit`` aggregates the
training data into fixed wall-clock bins (medians, so single spikes do not bend the profile),
runs statsmodels' STL on that short regular series and keeps the seasonal component as a table
indexed by time of day (or of week). Online, a Huber-clipped exponential tracker follows the level,
so an outlier moves it little while a slow drift is followed; a shift that persists for
``accept_points`` becomes the new level, as an operator would accept a new normal. Residuals are
scaled by a MAD per time-of-day bin, shrunk towards the global MAD and floored so that a zero MAD
(ratios that are mostly 0, flat series) never turns noise into alarms.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

from detector.base import (
    BaseDetector,
    Directions,
    apply_directions,
    check_choice,
    check_directions,
    check_frame,
    check_range,
)
from detector.methods.seasonal_models import SignalModel, StackedModels
from detector.robust import MAD_TO_SIGMA, Q90_TO_SIGMA, binned_quantiles, robust_sigma
from detector.timeutil import DAY_S, WEEK_S, phase_lookup, phase_of, seconds
from detector.tracking import Tracks, best_halflife, ewma_before, track_levels

__all__ = ["Decomposition", "SeasonalBaseline"]

_FINEST_BIN_S = 300.0
_PROFILE_SHRINK_POINTS = 10.0
_SHRINK_POINTS = 30.0
_SEASONALITIES = ("auto", "daily", "weekly", "none")


@dataclass(frozen=True)
class Decomposition:
    """Per-row view of the baseline: signed standardised residuals, expectation and band.

    ``z`` is measured against the fast tracker (what is new since the last few points); the
    expectation and the band are the slow tracker's, the stable picture an operator compares with.
    """

    z: pd.DataFrame
    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame


class SeasonalBaseline(BaseDetector):
    """Expected value, band and direction-aware score for each signal of a frame.

    Parameters
    ----------
    directions : str or dict
        ``"up"``, ``"down"`` or ``"both"`` for every signal, or a mapping signal -> direction
        (signals not named get ``"both"``).
    transform : {"auto", "log", "none"}
        ``"log"`` models ``log(x + c)``, so seasonal swings and noise scale with the level as they
        do for traffic and latency (``c`` is 5 % of the typical positive value, keeping zeros
        finite); ``"auto"`` does so for series that are never negative. The default models the
        values as they are, which served every evaluated corpus best.
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
        check_directions(self.directions)

    @property
    def models_(self) -> dict[str, SignalModel]:
        """What was learned about each signal (a view of ``stacked_``)."""
        return {name: self.stacked_.model(j) for j, name in enumerate(self.signals_)}

    # -- fitting ------------------------------------------------------------------------------
    def _fit_model(self, frame: pd.DataFrame) -> list[Tracks]:
        t_all = seconds(frame.index)
        self.signals_ = list(frame.columns)
        models = []
        for name in frame.columns:
            x = frame[name].to_numpy()
            ok = np.isfinite(x)
            models.append(self._fit_signal(t_all[ok], x[ok]))
        self.stacked_ = StackedModels.stack(models)
        self.seasonality_ = dict(zip(self.signals_, self.stacked_.seasonality, strict=True))
        # The fast and the slow tracker of every signal.
        return [Tracks.start(len(models)), Tracks.start(len(models))]

    def _offset(self, x: np.ndarray) -> float:
        positive = x[x > 0]
        if self.transform == "none" or positive.size == 0:
            return math.nan
        if self.transform == "auto" and (x.size == 0 or x.min() < 0):
            return math.nan
        return 0.05 * float(np.median(positive))

    def _fit_signal(self, t: np.ndarray, raw: np.ndarray) -> SignalModel:
        bins = int(self.bins_per_day)
        offset = self._offset(raw)
        if self.transform == "log" and math.isnan(offset):
            raise ValueError("transform='log' needs positive values in every signal")
        x = raw if math.isnan(offset) else np.log(np.maximum(raw + offset, 1e-300))
        if x.size < 8:
            ones = np.ones(bins)
            halflife = self._fixed_halflife(DAY_S / bins)
            how = f"none ({x.size} points)"
            return SignalModel(np.zeros(0), 0.0, ones, ones, how, halflife, offset)
        width = DAY_S / bins
        step = float(np.median(np.diff(t))) if x.size > 1 else width
        span = float(t[-1] - t[0])
        profile, period, how = np.zeros(0), 0.0, "none"
        if self.seasonality != "none":
            period, how = self._choose_period(span, step)
        if period:
            profile, how = self._seasonal_profile(t, x, step, period, how)
            if profile.size == 0:
                period = 0.0
        deseason = x - phase_lookup(profile, period, t) if period else x
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
            scales.append(self._phase_scales(t[settle:], resid[settle:], bins, typical))
        return SignalModel(profile, period, *scales, how, halflife, offset)

    def _choose_period(self, span: float, step: float) -> tuple[float, str]:
        wanted = self.seasonality
        if step > DAY_S / 8:
            return 0.0, f"none (sampling interval {step:.0f} s is too coarse for a daily profile)"
        if wanted in ("auto", "weekly") and span >= 2 * WEEK_S:
            return WEEK_S, "weekly"
        if wanted == "weekly":
            return 0.0, f"none (weekly needs 14 days of history, have {span / DAY_S:.1f})"
        if span >= 2 * DAY_S:
            return DAY_S, "daily"
        return 0.0, f"none (seasonal profile needs 2 days of history, have {span / DAY_S:.1f})"

    def _seasonal_profile(
        self, t: np.ndarray, x: np.ndarray, step: float, period: float, how: str
    ) -> tuple[np.ndarray, str]:
        # STL runs on medians over coarse wall-clock bins: a short regular series it can afford,
        # robust to spikes. It decides whether there is a seasonal pattern at all and gives the
        # trend; the profile itself is then read at a finer resolution, so sharp daily edges
        # (a batch job, a shift change) are kept rather than smoothed into ramps.
        width = DAY_S / self.bins_per_day
        key = np.floor(t / width).astype(np.int64)
        medians, _ = binned_quantiles(key - key[0], x, int(key[-1] - key[0]) + 1, [0.5])
        full = pd.Series(medians[:, 0], index=np.arange(key[0], key[-1] + 1))
        full = full.interpolate(limit_direction="both")
        n_bins = round(period / width)
        # STL's *_jump parameters evaluate its loess smoothers every few points and interpolate;
        # on these smooth bin medians that changes nothing measurable and saves most of the cost.
        jump = max(1, n_bins // 12)
        res = STL(
            full.to_numpy(),
            period=n_bins,
            seasonal_jump=jump,
            trend_jump=math.ceil(1.5 * jump),
            low_pass_jump=jump,
        ).fit()
        seasonal, remainder = res.seasonal, res.resid
        total = np.var(seasonal + remainder)
        strength = 1.0 - np.var(remainder) / total if total > 1e-12 * np.mean(full**2) else 0.0
        # Noise alone leaves a profile whose variance is about var(remainder) / cycles; demand
        # clearly more than that before believing in a pattern.
        phase_bin = phase_of(full.index.to_numpy() * width, period, width)
        coarse = pd.Series(seasonal).groupby(phase_bin).mean()
        cycles = full.size / n_bins
        if strength < self.min_strength or np.var(coarse) < 4.0 * np.var(remainder) / cycles:
            return np.zeros(0), f"none (seasonal strength {strength:.2f} is too weak)"
        centres = (full.index.to_numpy() + 0.5) * width
        base = pd.Series(seasonal).groupby(phase_bin).mean().reindex(range(n_bins))
        base = base.interpolate(limit_direction="both").fillna(0.0).to_numpy()
        trend = np.interp(t, centres, res.trend)
        resid = x - trend - phase_lookup(base, period, t)
        n_fine = max(n_bins, round(period / max(step, _FINEST_BIN_S)))
        medians, size = binned_quantiles(phase_of(t, period, period / n_fine), resid, n_fine, [0.5])
        # Each fine bin's correction is shrunk by how few cycles it has seen, so a weekly
        # profile from two weeks is not two weeks of noise.
        fine = np.nan_to_num(medians[:, 0]) * size / (size + _PROFILE_SHRINK_POINTS)
        profile = np.interp(
            (np.arange(n_fine) + 0.5) / n_fine,
            (np.arange(n_bins + 2) - 0.5) / n_bins,
            np.r_[base[-1], base, base[0]],
        )
        profile = profile + fine
        return profile - np.mean(profile), how

    def _phase_scales(
        self, t: np.ndarray, resid: np.ndarray, bins: int, typical: float
    ) -> np.ndarray:
        ok = np.isfinite(resid)
        t, resid = t[ok], resid[ok]
        floor = 1e-6 * max(1.0, typical)
        if resid.size == 0:
            return np.full(bins, floor)
        dev = np.abs(resid - np.median(resid))
        overall = robust_sigma(dev)
        # Ratios of small counts are mostly one value with rare large ones: their MAD is 0 while
        # the rare values are ordinary. The 90th percentile sees them; the mean deviation keeps
        # the scale positive as soon as anything varies at all.
        floor = max(floor, 0.5 * 1.2533 * float(np.mean(dev)), 0.25 * overall)
        overall = max(overall, floor)
        q, count = binned_quantiles(phase_of(t, DAY_S, DAY_S / bins), dev, bins, [0.5, 0.9])
        per_bin = np.maximum(MAD_TO_SIGMA * q[:, 0], q[:, 1] / Q90_TO_SIGMA)
        per_bin = np.where(np.isfinite(per_bin), per_bin, overall)
        shrunk = (count * per_bin + _SHRINK_POINTS * overall) / (count + _SHRINK_POINTS)
        return np.maximum(shrunk, floor)

    # -- scoring ------------------------------------------------------------------------------
    def _fixed_halflife(self, step: float) -> float:
        return step if self.level_halflife == "auto" else float(self.level_halflife)

    def _decompose(
        self, frame: pd.DataFrame, state: list[Tracks]
    ) -> tuple[Decomposition, list[Tracks]]:
        # Every signal at once in arrays: with many signals and few rows (the streaming case)
        # per-signal numpy calls on tiny arrays would dominate the cost.
        t = seconds(frame.index)
        models = self.stacked_
        x = models.forward(frame.reindex(columns=self.signals_).to_numpy())
        season = models.season(t)
        d = x - season
        fast, slow = state
        points = int(self.accept_points)
        s = phase_lookup(models.scale, DAY_S, t).T
        level = track_levels(t, d, self.clip * s, fast, models.halflife, points, 0.0)
        z = (d - level) / s
        s = phase_lookup(models.slow_scale, DAY_S, t).T
        hl = np.maximum(models.halflife, self.slow_halflife)
        level = track_levels(t, d, self.clip * s, slow, hl, points, self.slow_accept_after)
        centre = level + season
        parts = (
            z,
            models.backward(centre),
            models.backward(centre - self.band * s),
            models.backward(centre + self.band * s),
        )
        idx, cols = frame.index, pd.Index(self.signals_)
        dec = Decomposition(*(pd.DataFrame(part, index=idx, columns=cols) for part in parts))
        return dec, state

    def _run(self, frame: pd.DataFrame, state: list[Tracks]) -> tuple[pd.DataFrame, list[Tracks]]:
        dec, state = self._decompose(frame, state)
        return self.scores_from(dec.z), state

    def _run_training(
        self, frame: pd.DataFrame, state: list[Tracks]
    ) -> tuple[pd.DataFrame, list[Tracks]]:
        # Other families learn from the training residuals: keep them rather than recompute.
        self.train_decomposition_, state = self._decompose(frame, state)
        return self.scores_from(self.train_decomposition_.z), state

    def scores_from(self, z: pd.DataFrame) -> pd.DataFrame:
        """Direction-aware raw scores of signed standardised residuals."""
        out = apply_directions(z.to_numpy(), self.directions, list(z.columns))
        return pd.DataFrame(out, index=z.index, columns=z.columns)

    def decompose(self, frame: pd.DataFrame, *, advance: bool = False) -> Decomposition:
        """Residuals, expectations and scales of ``frame``; ``advance`` keeps the tracker state."""
        self._check_fitted()
        state = self.state_ if advance else copy.deepcopy(self.state_)
        dec, _ = self._decompose(check_frame(frame), state)
        return dec
