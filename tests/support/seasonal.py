"""Daily-seasonal test series at a 5-minute step, for the seasonal baseline's tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["DAY_POINTS", "START", "seasonal_frame", "seasonal_values"]

DAY_POINTS = 288  # 5-minute steps
START = "2026-01-05"  # a Monday


def seasonal_values(
    n: int, seed: int = 0, *, level: float = 100.0, amp: float = 30.0, noise: float = 3.0
) -> np.ndarray:
    """``level + amp * sin(daily phase)`` plus Gaussian noise of sd ``noise``."""
    rng = np.random.default_rng(seed)
    phase = np.arange(n) * 2 * np.pi / DAY_POINTS
    return level + amp * np.sin(phase) + rng.normal(0.0, noise, n)


def seasonal_frame(n: int, seed: int = 0, **kwargs: float) -> pd.DataFrame:
    """:func:`seasonal_values` as column ``rps`` of a frame indexed every 5 minutes from START."""
    idx = pd.date_range(START, periods=n, freq="5min")
    return pd.DataFrame({"rps": seasonal_values(n, seed, **kwargs)}, index=idx)
