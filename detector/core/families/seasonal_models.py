"""The seasonal baseline's fitted parameters: one signal's, and every signal's stacked in arrays.

Scoring reads the stacked form, so that all signals of a row are handled by one set of array
operations; :class:`SeasonalFit` is the view of one signal, for fitting, plots and inspection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.core.timeutil import phase_lookup

__all__ = ["SeasonalFit", "StackedModels"]


@dataclass
class SeasonalFit:
    """What the seasonal baseline learned about one signal."""

    profile: np.ndarray  # seasonal offset per phase bin; empty when no seasonality is used
    period_s: float  # length of the cycle the profile covers (0 when none)
    scale: np.ndarray  # one-step residual scale per time-of-day bin
    slow_scale: np.ndarray  # residual scale against the slow level, per time-of-day bin
    seasonality: str  # what was used and, on fallback, why
    halflife: float  # seconds for the level to move half-way to a new value
    offset: float  # values are modelled as log(x + offset); NaN when modelled as they are

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Values in the space the model adds its parts in."""
        if math.isnan(self.offset):
            return x
        return _log(x, self.offset)

    def backward(self, y: np.ndarray) -> np.ndarray:
        """Model-space values back in the signal's units."""
        return y if math.isnan(self.offset) else np.exp(y) - self.offset


@dataclass
class _Profiles:
    """The profiles of the signals that share one period and one number of bins."""

    period_s: float
    columns: np.ndarray  # positions of these signals
    table: np.ndarray  # one row of bins per signal, in ``columns`` order


@dataclass
class StackedModels:
    """Every signal's :class:`SeasonalFit` in arrays, one entry or row per signal."""

    scale: np.ndarray  # (signals, bins)
    slow_scale: np.ndarray  # (signals, bins)
    halflife: np.ndarray
    offset: np.ndarray
    seasonality: list[str]
    profiles: list[_Profiles]

    @classmethod
    def stack(cls, models: list[SeasonalFit]) -> StackedModels:
        """Stack ``models``, in signal order."""
        groups: dict[tuple[float, int], list[int]] = {}
        for j, model in enumerate(models):
            if model.period_s:
                groups.setdefault((model.period_s, model.profile.size), []).append(j)
        profiles = [
            _Profiles(period, np.array(cols), np.stack([models[j].profile for j in cols]))
            for (period, _), cols in groups.items()
        ]
        return cls(
            scale=np.stack([m.scale for m in models]),
            slow_scale=np.stack([m.slow_scale for m in models]),
            halflife=np.array([m.halflife for m in models]),
            offset=np.array([m.offset for m in models]),
            seasonality=[m.seasonality for m in models],
            profiles=profiles,
        )

    def model(self, j: int) -> SeasonalFit:
        """The model of signal ``j``."""
        profile, period = np.zeros(0), 0.0
        for group in self.profiles:
            hit = np.flatnonzero(group.columns == j)
            if hit.size:
                profile, period = group.table[hit[0]], group.period_s
        return SeasonalFit(
            profile,
            period,
            self.scale[j],
            self.slow_scale[j],
            self.seasonality[j],
            float(self.halflife[j]),
            float(self.offset[j]),
        )

    def profile_spread(self) -> np.ndarray:
        """Standard deviation of each signal's seasonal profile over its cycle (0 without one)."""
        out = np.zeros(self.offset.size)
        for group in self.profiles:
            out[group.columns] = group.table.std(axis=1)
        return out

    def season(self, t: np.ndarray) -> np.ndarray:
        """Seasonal offset of each signal at each time, (times, signals); 0 without a profile."""
        out = np.zeros((t.size, self.offset.size))
        for group in self.profiles:
            out[:, group.columns] = phase_lookup(group.table, group.period_s, t).T
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """:meth:`SeasonalFit.forward` of each column of ``x`` (times, signals)."""
        logged = self._logged()
        if logged.size == 0:
            return x
        out = x.copy()
        out[:, logged] = _log(x[:, logged], self.offset[logged])
        return out

    def backward(self, y: np.ndarray) -> np.ndarray:
        """:meth:`SeasonalFit.backward` of each column of ``y`` (times, signals)."""
        logged = self._logged()
        if logged.size == 0:
            return y
        out = y.copy()
        out[:, logged] = np.exp(y[:, logged]) - self.offset[logged]
        return out

    def _logged(self) -> np.ndarray:
        return np.flatnonzero(~np.isnan(self.offset))


def _log(x: np.ndarray, offset: float | np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.maximum(x + offset, 1e-300))
