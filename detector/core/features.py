"""Causal window statistics over standardised residuals, with the tail kept for streaming."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Window", "residual_features", "window_mean", "window_sum"]


class Window:
    """The last ``size - 1`` rows seen, so window statistics continue across calls."""

    def __init__(self, n_columns: int, size: int) -> None:
        self.size = size
        self.tail = np.zeros((0, n_columns))

    def extend(self, values: np.ndarray) -> np.ndarray:
        """History rows followed by ``values``; remembers the new tail."""
        full = np.vstack([self.tail, values])
        self.tail = full[max(full.shape[0] - (self.size - 1), 0) :]
        return full


def window_sum(values: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Causal sum and count of the values present in the last ``window.size`` rows.

    Each window is summed on its own rather than as a difference of running totals: one absurd
    value (a z of 1e300) would otherwise swamp every later row of the block.

    >>> w = Window(1, 2)
    >>> [a.ravel().tolist() for a in window_sum(np.array([[1.0], [3.0], [np.nan]]), w)]
    [[1.0, 4.0, 3.0], [1.0, 2.0, 1.0]]
    """
    n_new = values.shape[0]
    full = window.extend(values)
    if n_new == 0:
        return np.zeros((0, full.shape[1])), np.zeros((0, full.shape[1]))
    present = ~np.isnan(full)
    # Rows before the first have nothing: a window reaching there sums what it has.
    pad = np.zeros((window.size - 1, full.shape[1]))
    data = np.vstack([pad, np.where(present, full, 0.0)])[-(n_new + window.size - 1) :]
    seen = np.vstack([pad, present.astype(np.float64)])[-(n_new + window.size - 1) :]
    with np.errstate(invalid="ignore"):  # +inf and -inf in one window: no sum (NaN)
        total = sliding_window_view(data, window.size, axis=0).sum(axis=-1)
    return total, sliding_window_view(seen, window.size, axis=0).sum(axis=-1)


def window_mean(values: np.ndarray, window: Window) -> np.ndarray:
    """Causal mean of the values present in the last ``window.size`` rows (0 when none).

    >>> w = Window(1, 2)
    >>> window_mean(np.array([[1.0], [3.0], [np.nan]]), w).ravel().tolist()
    [1.0, 2.0, 3.0]
    """
    total, count = window_sum(values, window)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def residual_features(z: pd.DataFrame, window: Window) -> pd.DataFrame:
    """:func:`residual_feature_array` as a frame: columns ``<signal>:z``, ``:mean``, ``:jump``."""
    names = [f"{name}:{part}" for name in z.columns for part in ("z", "mean", "jump")]
    return pd.DataFrame(residual_feature_array(z.to_numpy(), window), index=z.index, columns=names)


def residual_feature_array(values: np.ndarray, window: Window) -> np.ndarray:
    """Joint feature vector per row: each signal's residual, its recent mean, and the jump between
    (three columns per signal, signal by signal).

    The recent mean catches shifts too small for any single point; the jump catches spikes on top
    of an already shifted level.
    """
    mean = window_mean(values, window)
    now = np.nan_to_num(values, nan=0.0)
    return np.stack([now, mean, now - mean], axis=2).reshape(values.shape[0], 3 * values.shape[1])
