"""Robust statistics over bins of a series: quantiles per bin and outlier-proof scales."""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SIGMA", "Q90_TO_SIGMA", "binned_quantiles", "robust_sigma"]

MAD_TO_SIGMA = 1.4826
Q90_TO_SIGMA = 1.6449


def robust_sigma(dev: np.ndarray) -> float:
    """Normal-consistent scale of absolute deviations: the MAD, or the 90th percentile if larger."""
    if dev.size == 0:
        return 0.0
    mad, q90 = np.quantile(dev, [0.5, 0.9])
    return float(max(MAD_TO_SIGMA * mad, q90 / Q90_TO_SIGMA))


def binned_quantiles(
    bins: np.ndarray, values: np.ndarray, n_bins: int, qs: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles ``qs`` of ``values`` within each bin (NaN for empty bins), and the bin sizes.

    One sort for all bins, then linear interpolation between order statistics as
    ``numpy.quantile`` does.

    >>> q, n = binned_quantiles(np.array([0, 0, 0, 2]), np.array([3.0, 1.0, 2.0, 5.0]), 3, [0.5])
    >>> q.ravel().tolist(), n.tolist()
    ([2.0, nan, 5.0], [3.0, 0.0, 1.0])
    """
    order = np.lexsort((values, bins))
    ordered = values[order]
    edges = np.searchsorted(bins[order], np.arange(n_bins + 1))
    lo, size = edges[:-1], np.diff(edges)
    out = np.full((n_bins, len(qs)), np.nan)
    has = size > 0
    for j, q in enumerate(qs):
        pos = lo[has] + q * (size[has] - 1)
        below = np.floor(pos).astype(np.int64)
        above = np.minimum(below + 1, lo[has] + size[has] - 1)
        frac = pos - below
        out[has, j] = ordered[below] * (1.0 - frac) + ordered[above] * frac
    return out, size.astype(np.float64)
