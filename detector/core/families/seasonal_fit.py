"""Fitting the seasonal baseline's parts for one signal: its cycle, its profile, its scales.

The profile: STL (statsmodels) on medians over coarse wall-clock bins decides whether a daily or
weekly pattern exists and gives the trend; the profile is then read at a finer resolution from
the detrended points. The scales: robust residual scales per hour of day, shrunk towards the
whole series' scale and floored.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

from detector.core.robust import MAD_TO_SIGMA, Q90_TO_SIGMA, binned_quantiles, robust_sigma
from detector.core.timeutil import DAY_S, WEEK_S, phase_lookup, phase_of

__all__ = [
    "choose_period",
    "log_offset",
    "phase_scales",
    "seasonal_profile",
    "trials_array",
    "winsorised",
]

_FINEST_BIN_S = 300.0
_PROFILE_SHRINK_POINTS = 10.0
_SHRINK_POINTS = 30.0
# No bin's scale falls below this share of the whole series' (a bin that never varied).
_OVERALL_FLOOR = 0.05


def choose_period(wanted: str, span: float, step: float) -> tuple[float, str]:
    """The seasonal period to fit (0 for none) and how it was chosen."""
    if step > DAY_S / 8:
        return 0.0, f"none (sampling interval {step:.0f} s is too coarse for a daily profile)"
    if wanted in ("auto", "weekly") and span >= 2 * WEEK_S:
        return WEEK_S, "weekly"
    if wanted == "weekly":
        return 0.0, f"none (weekly needs 14 days of history, have {span / DAY_S:.1f})"
    if span >= 2 * DAY_S:
        return DAY_S, "daily"
    return 0.0, f"none (seasonal profile needs 2 days of history, have {span / DAY_S:.1f})"


def seasonal_profile(
    t: np.ndarray,
    x: np.ndarray,
    step: float,
    period: float,
    how: str,
    *,
    bins_per_day: int,
    min_strength: float,
) -> tuple[np.ndarray, str]:
    """The profile over ``period`` at up to five-minute resolution, or an empty one and why not."""
    # STL runs on medians over coarse wall-clock bins: a short regular series it can afford,
    # robust to spikes. It decides whether there is a seasonal pattern at all and gives the
    # trend; the profile itself is then read at a finer resolution, so sharp daily edges
    # (a batch job, a shift change) are kept rather than smoothed into ramps.
    width = DAY_S / bins_per_day
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
    if strength < min_strength or np.var(coarse) < 4.0 * np.var(remainder) / cycles:
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


def phase_scales(t: np.ndarray, resid: np.ndarray, bins: int, typical: float) -> np.ndarray:
    """Residual scale per time-of-day bin: the larger of the MAD and the 90th percentile."""
    ok = np.isfinite(resid)
    t, resid = t[ok], resid[ok]
    floor = 1e-6 * max(1.0, typical)
    if resid.size == 0:
        return np.full(bins, floor)
    dev = np.abs(resid - np.median(resid))
    overall = robust_sigma(dev)
    # Values that are mostly one with rare others (a counter's quiet hours) have a MAD of 0
    # while the rare values are ordinary. The 90th percentile sees them; the mean deviation keeps
    # the scale positive as soon as anything varies at all. Both are taken per bin: a series
    # ten times busier by day than by night (traffic) is also ten times calmer by night.
    key = phase_of(t, DAY_S, DAY_S / bins)
    q, count = binned_quantiles(key, dev, bins, [0.5, 0.9, 0.99])
    # The mean of deviations capped at the bin's 99th percentile: one absurd value must not
    # become the scale of its hour (and so the band, and the calibration of every later row).
    capped = np.minimum(dev, np.nan_to_num(q[key, 2], nan=0.0))
    mean_dev = np.bincount(key, weights=capped, minlength=bins) / np.maximum(count, 1.0)
    floor = max(floor, _OVERALL_FLOOR * overall)
    overall = max(overall, floor, 0.5 * 1.2533 * float(np.mean(capped)))
    per_bin = np.maximum(MAD_TO_SIGMA * q[:, 0], q[:, 1] / Q90_TO_SIGMA)
    per_bin = np.maximum(per_bin, 0.5 * 1.2533 * mean_dev)
    per_bin = np.where(np.isfinite(per_bin) & (count > 0), per_bin, overall)
    shrunk = (count * per_bin + _SHRINK_POINTS * overall) / (count + _SHRINK_POINTS)
    return np.maximum(shrunk, floor)


# Training values further than this many typical deviations from the median are clipped before
# the half-life and the scales are estimated.
_WINSOR = 1000.0


def winsorised(x: np.ndarray) -> np.ndarray:
    """``x`` clipped at its median plus or minus ``_WINSOR`` times its typical step.

    >>> float(winsorised(np.r_[np.arange(10.0), 1e6, np.arange(10.0)]).max())
    3005.0
    """
    if x.size < 3:
        return x
    centre = float(np.median(x))
    step = float(np.median(np.abs(np.diff(x))))
    spread = max(step, float(np.median(np.abs(x - centre))), 1e-12 * max(1.0, abs(centre)))
    return np.clip(x, centre - _WINSOR * spread, centre + _WINSOR * spread)


def log_offset(x: np.ndarray, transform: str) -> float:
    """The ``c`` of a ``log(x + c)`` model of ``x`` under ``transform``; NaN: model as it is."""
    positive = x[x > 0]
    if transform == "none" or positive.size == 0:
        return math.nan
    if transform == "auto" and (x.size == 0 or x.min() < 0):
        return math.nan
    return 0.05 * float(np.median(positive))


def trials_array(frame: pd.DataFrame, trials: pd.DataFrame) -> np.ndarray:
    """``trials`` in ``frame``'s rows and columns (NaN where not given), checked."""
    unknown = [c for c in trials.columns if c not in frame.columns]
    if unknown:
        raise ValueError(f"trials for columns the frame does not have: {unknown}")
    return trials.reindex(index=frame.index, columns=frame.columns).to_numpy(np.float64)
