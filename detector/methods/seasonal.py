"""Seasonal baseline: STL profiles keyed by wall-clock phase, a robust level tracker, robust scales.

The model for one signal is ``x(t) = level(t) + season(phase(t)) + noise``. ``fit`` aggregates the
training data into fixed wall-clock bins (medians, so single spikes do not bend the profile),
runs statsmodels' STL on that short regular series and keeps the seasonal component as a table
indexed by time of day (or of week). Online, a Huber-clipped exponential tracker follows the level,
so an outlier moves it little while a slow drift is followed; a shift that persists for
``accept_after`` becomes the new level, as an operator would accept a new normal. Residuals are
scaled by a MAD per time-of-day bin, shrunk towards the global MAD and floored so that a zero MAD
(ratios that are mostly 0, flat series) never turns noise into alarms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

from detector.base import (
    BaseDetector,
    Directions,
    apply_direction,
    check_choice,
    check_directions,
    check_frame,
    check_range,
    direction_for,
)
from detector.timeutil import DAY_S, WEEK_S, phase_lookup, phase_of, seconds

__all__ = ["Decomposition", "SeasonalBaseline"]

_MAD_TO_SIGMA = 1.4826
_SHRINK_POINTS = 30.0
_SEASONALITIES = ("auto", "daily", "weekly", "none")


@dataclass(frozen=True)
class Decomposition:
    """Per-row view of the baseline: signed standardised residual, expectation and band."""

    z: pd.DataFrame
    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame


@dataclass
class _SignalModel:
    profile: np.ndarray  # seasonal offset per phase bin; empty when no seasonality is used
    period_s: float  # length of the cycle the profile covers (0 when none)
    scale: np.ndarray  # residual scale per time-of-day bin
    seasonality: str  # what was used and, on fallback, why
    offset: float  # values are modelled as log(x + offset); NaN when modelled as they are

    def forward(self, x: np.ndarray) -> np.ndarray:
        if math.isnan(self.offset):
            return x
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(np.maximum(x + self.offset, 1e-300))

    def backward(self, y: np.ndarray) -> np.ndarray:
        return y if math.isnan(self.offset) else np.exp(y) - self.offset


@dataclass
class _Track:
    level: float = math.nan
    last_t: float = math.nan
    run_sign: int = 0
    run_start: float = 0.0
    run_sum: float = 0.0
    run_n: int = 0


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
        finite); ``"auto"`` does so for series that are never negative.
    seasonality : {"auto", "daily", "weekly", "none"}
        ``"auto"`` uses a weekly profile with two weeks of data, a daily one with two days, and
        none otherwise; the choice and the reason are kept in ``seasonality_``.
    bins_per_day : int
        Resolution of the wall-clock profile and of the per-phase scales.
    min_strength : float
        Seasonal strength (1 - var(remainder) / var(seasonal + remainder)) below which the profile
        is dropped as noise.
    level_halflife : float
        Seconds for the level tracker to move half-way to a new level within the clip.
    clip : float
        Residuals are clipped to this many scales before they move the level.
    accept_after : float
        Seconds after which a shift that stays outside the clip becomes the new level.
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
        transform: str = "auto",
        seasonality: str = "auto",
        bins_per_day: int = 24,
        min_strength: float = 0.2,
        level_halflife: float = 3 * 3600.0,
        clip: float = 3.0,
        accept_after: float = 3600.0,
        band: float = 3.0,
    ) -> None:
        self.directions = directions
        self.transform = transform
        self.seasonality = seasonality
        self.bins_per_day = bins_per_day
        self.min_strength = min_strength
        self.level_halflife = level_halflife
        self.clip = clip
        self.accept_after = accept_after
        self.band = band

    def _validate_params(self) -> None:
        check_choice("transform", self.transform, ("auto", "log", "none"))
        check_choice("seasonality", self.seasonality, _SEASONALITIES)
        check_range("bins_per_day", self.bins_per_day, 4, 288)
        check_range("min_strength", self.min_strength, 0.0, 1.0)
        check_range("level_halflife", self.level_halflife, 0.0, math.inf, closed="neither")
        check_range("clip", self.clip, 0.0, math.inf, closed="neither")
        check_range("accept_after", self.accept_after, 0.0, math.inf, closed="left")
        check_range("band", self.band, 0.0, math.inf, closed="neither")
        check_directions(self.directions)

    # -- fitting ------------------------------------------------------------------------------
    def _fit_model(self, frame: pd.DataFrame) -> dict[str, _Track]:
        t_all = seconds(frame.index)
        self.models_: dict[str, _SignalModel] = {}
        self.seasonality_: dict[str, str] = {}
        self.signals_ = list(frame.columns)
        for name in frame.columns:
            x = frame[name].to_numpy()
            ok = np.isfinite(x)
            model = self._fit_signal(t_all[ok], x[ok])
            self.models_[name] = model
            self.seasonality_[name] = model.seasonality
        return {name: _Track() for name in frame.columns}

    def _offset(self, x: np.ndarray) -> float:
        positive = x[x > 0]
        if self.transform == "none" or positive.size == 0:
            return math.nan
        if self.transform == "auto" and (x.size == 0 or x.min() < 0):
            return math.nan
        return 0.05 * float(np.median(positive))

    def _fit_signal(self, t: np.ndarray, raw: np.ndarray) -> _SignalModel:
        bins = int(self.bins_per_day)
        offset = self._offset(raw)
        if self.transform == "log" and math.isnan(offset):
            raise ValueError("transform='log' needs positive values in every signal")
        x = raw if math.isnan(offset) else np.log(np.maximum(raw + offset, 1e-300))
        if x.size < 8:
            return _SignalModel(np.zeros(0), 0.0, np.ones(bins), f"none ({x.size} points)", offset)
        width = DAY_S / bins
        step = float(np.median(np.diff(t))) if x.size > 1 else width
        span = float(t[-1] - t[0])
        profile, period, how = np.zeros(0), 0.0, "none"
        if self.seasonality != "none":
            period, how = self._choose_period(span, step)
        if period:
            profile, how = self._seasonal_profile(t, x, width, period, how)
            if profile.size == 0:
                period = 0.0
        deseason = x - phase_lookup(profile, period, t) if period else x
        track = _Track()
        level_prev = self._track(t, deseason, np.full(x.size, math.inf), track)
        resid = deseason - level_prev
        # The tracker's first points have no history; leave them out of the scale estimate.
        settle = min(resid.size // 5, 50)
        scale = self._phase_scales(t[settle:], resid[settle:], bins, float(np.median(np.abs(x))))
        return _SignalModel(profile, period, scale, how, offset)

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
        self, t: np.ndarray, x: np.ndarray, width: float, period: float, how: str
    ) -> tuple[np.ndarray, str]:
        # Medians over wall-clock bins: a short regular series STL can afford, robust to spikes.
        key = np.floor(t / width).astype(np.int64)
        agg = pd.Series(x).groupby(key).median()
        full = agg.reindex(np.arange(key[0], key[-1] + 1)).interpolate(limit_direction="both")
        n_bins = round(period / width)
        res = STL(full.to_numpy(), period=n_bins).fit()
        seasonal, remainder = res.seasonal, res.resid
        denom = np.var(seasonal + remainder)
        strength = 1.0 - np.var(remainder) / denom if denom > 0 else 0.0
        if strength < self.min_strength:
            return np.zeros(0), f"none (seasonal strength {strength:.2f} < {self.min_strength})"
        phase_bin = phase_of(full.index.to_numpy() * width, period, width)
        profile = pd.Series(seasonal).groupby(phase_bin).mean().reindex(range(n_bins))
        filled = profile.interpolate(limit_direction="both").fillna(0.0).to_numpy()
        return filled - np.mean(filled), how

    def _phase_scales(
        self, t: np.ndarray, resid: np.ndarray, bins: int, typical: float
    ) -> np.ndarray:
        ok = np.isfinite(resid)
        t, resid = t[ok], resid[ok]
        floor = 1e-6 * max(1.0, typical)
        if resid.size == 0:
            return np.full(bins, floor)
        dev = np.abs(resid - np.median(resid))
        overall = _MAD_TO_SIGMA * np.median(dev)
        # A zero MAD (mostly-zero ratios, discrete counts) falls back to the mean absolute
        # deviation, which is positive as soon as anything varies at all.
        floor = max(floor, 1.2533 * float(np.mean(dev)) * 0.5, 0.25 * overall)
        overall = max(overall, floor)
        stats = pd.Series(dev).groupby(phase_of(t, DAY_S, DAY_S / bins)).agg(["median", "size"])
        stats = stats.reindex(range(bins))
        per_bin = (_MAD_TO_SIGMA * stats["median"]).fillna(overall).to_numpy()
        count = stats["size"].fillna(0.0).to_numpy()
        shrunk = (count * per_bin + _SHRINK_POINTS * overall) / (count + _SHRINK_POINTS)
        return np.maximum(shrunk, floor)

    # -- scoring ------------------------------------------------------------------------------
    def _track(self, t: np.ndarray, d: np.ndarray, lim: np.ndarray, st: _Track) -> np.ndarray:
        """Run the level tracker; return the level each row is judged against (before the row)."""
        out = np.full(d.size, np.nan)
        level, last_t = st.level, st.last_t
        run_sign, run_start, run_sum, run_n = st.run_sign, st.run_start, st.run_sum, st.run_n
        decay = -math.log(2.0) / self.level_halflife
        accept = self.accept_after
        for i, (ti, di, li) in enumerate(zip(t.tolist(), d.tolist(), lim.tolist(), strict=True)):
            if di != di:  # NaN: no observation, the state waits
                continue
            if level != level:
                level, last_t = di, ti
                out[i] = di
                continue
            out[i] = level
            r = di - level
            if r > li or r < -li:
                sign = 1 if r > 0 else -1
                if sign != run_sign:
                    run_sign, run_start, run_sum, run_n = sign, ti, 0.0, 0
                run_sum += di
                run_n += 1
                if ti - run_start >= accept and run_n >= 3:
                    level, last_t = run_sum / run_n, ti
                    run_sign, run_sum, run_n = 0, 0.0, 0
                    continue
                r = sign * li
            elif r * run_sign < 0:
                run_sign, run_sum, run_n = 0, 0.0, 0
            level += (1.0 - math.exp(decay * max(ti - last_t, 0.0))) * r
            last_t = ti
        st.level, st.last_t = level, last_t
        st.run_sign, st.run_start, st.run_sum, st.run_n = run_sign, run_start, run_sum, run_n
        return out

    def _decompose(
        self, frame: pd.DataFrame, state: dict[str, _Track]
    ) -> tuple[Decomposition, dict[str, _Track]]:
        t = seconds(frame.index)
        z, expected, lower, upper = {}, {}, {}, {}
        for name in self.signals_:
            model = self.models_[name]
            raw = frame[name].to_numpy() if name in frame else np.full(t.size, np.nan)
            x = model.forward(raw)
            season = phase_lookup(model.profile, model.period_s, t) if model.period_s else 0.0
            s = phase_lookup(model.scale, DAY_S, t)
            centre = self._track(t, x - season, self.clip * s, state[name]) + season
            z[name] = (x - centre) / s
            expected[name] = model.backward(centre)
            lower[name] = model.backward(centre - self.band * s)
            upper[name] = model.backward(centre + self.band * s)
        idx = frame.index
        dec = Decomposition(
            *(pd.DataFrame(part, index=idx) for part in (z, expected, lower, upper))
        )
        return dec, state

    def _run(
        self, frame: pd.DataFrame, state: dict[str, _Track]
    ) -> tuple[pd.DataFrame, dict[str, _Track]]:
        dec, state = self._decompose(frame, state)
        return self.scores_from(dec.z), state

    def _run_training(
        self, frame: pd.DataFrame, state: dict[str, _Track]
    ) -> tuple[pd.DataFrame, dict[str, _Track]]:
        # Other families learn from the training residuals: keep them rather than recompute.
        self.train_decomposition_, state = self._decompose(frame, state)
        return self.scores_from(self.train_decomposition_.z), state

    def scores_from(self, z: pd.DataFrame) -> pd.DataFrame:
        """Direction-aware raw scores of signed standardised residuals."""
        out = {n: apply_direction(z[n].to_numpy(), direction_for(self.directions, n)) for n in z}
        return pd.DataFrame(out, index=z.index)

    def decompose(self, frame: pd.DataFrame, *, advance: bool = False) -> Decomposition:
        """Residuals, expectations and scales of ``frame``; ``advance`` keeps the tracker state."""
        self._check_fitted()
        state = self.state_ if advance else {k: _Track(**vars(v)) for k, v in self.state_.items()}
        dec, _ = self._decompose(check_frame(frame), state)
        return dec
