"""Calibration: raw detector scores to ``anomaly_score`` in [0, 1].

A raw score's rarity is its survival probability ``p`` among the scores seen on training data:
empirical in the body, and beyond a high quantile an exponential tail fitted robustly to the
exceedances (peaks over threshold), so scores larger than anything seen in training still get a
graded, finite rarity. The calibrated score is ``exp(-p * n)`` with ``n`` the number of points in a
reference horizon (one day by default): the probability that a whole normal day would not produce a
score this high. A value seen a few times a day maps near 0, one rarer than once a week above 0.85,
so one threshold means the same for every signal and detector.
"""

from __future__ import annotations

import numpy as np

from detector.base import NotFittedError, check_range

__all__ = ["TailCalibrator"]


class TailCalibrator:
    """Map raw scores to [0, 1] through the training score distribution.

    Parameters
    ----------
    tail_quantile : float
        Quantile above which the tail is modelled as exponential.
    min_tail_points : int
        The tail is fitted to at least this many exceedances (the quantile drops on short data).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cal = TailCalibrator().fit(np.abs(rng.normal(size=10_000)), horizon_points=2880)
    >>> cal.transform(np.array([0.0, 2.0, 6.0])).round(2).tolist()
    [0.0, 0.0, 1.0]
    """

    def __init__(self, *, tail_quantile: float = 0.98, min_tail_points: int = 10) -> None:
        self.tail_quantile = tail_quantile
        self.min_tail_points = min_tail_points

    def fit(self, scores: np.ndarray, *, horizon_points: float) -> TailCalibrator:
        """Learn the score distribution; ``horizon_points`` is the reference horizon's size."""
        check_range("tail_quantile", self.tail_quantile, 0.5, 1.0, closed="left")
        check_range("min_tail_points", self.min_tail_points, 1, 1e9)
        check_range("horizon_points", horizon_points, 1.0, np.inf, closed="left")
        s = np.asarray(scores, dtype=np.float64)
        s = np.sort(s[np.isfinite(s)])
        if s.size == 0:
            s = np.zeros(1)
        q = min(self.tail_quantile, 1.0 - self.min_tail_points / s.size)
        u = float(np.quantile(s, max(q, 0.0)))
        excess = s[s > u] - u
        # The median excess, not the mean: a few incidents inside the training window must not
        # stretch the tail until later incidents look ordinary. A tail with no spread (flat
        # training scores) still needs a positive scale, or any larger score would be
        # infinitely rare regardless of its size.
        beta = float(np.median(excess)) / np.log(2.0) if excess.size else 0.0
        self.beta_ = max(beta, 1e-6 * (1.0 + abs(u)))
        self.threshold_ = u
        self.p_threshold_ = float(np.mean(s >= u)) if s.size else 1.0
        self.sorted_ = s
        self.n_dropped_ = 0  # lowest scores left out of ``sorted_`` by ``compact``
        self.horizon_points_ = float(horizon_points)
        return self

    def compact(self, *, precision: float = 40.0) -> TailCalibrator:
        """Keep only the training scores that can still change a calibrated score.

        Everything at or above the tail threshold is kept, and at least the share of the highest
        scores whose survival gives ``exp(-precision)``: below them every score calibrates to
        at most ``exp(-precision)`` (about 4e-18 by default), before and after. Other scores are
        unchanged. Thousands of series' calibrators then fit in little memory.
        """
        if not hasattr(self, "sorted_"):
            raise NotFittedError("TailCalibrator is not fitted yet; call fit() first")
        s = self.sorted_
        total = s.size + self.n_dropped_
        keep = max(
            int(np.count_nonzero(s >= self.threshold_)),
            int(np.ceil(total * precision / self.horizon_points_)),
            1,
        )
        if keep < s.size:
            self.n_dropped_ += s.size - keep
            self.sorted_ = s[s.size - keep :].copy()
        return self

    def survival(self, scores: np.ndarray) -> np.ndarray:
        """Estimated probability that a normal point scores at least this high."""
        if not hasattr(self, "sorted_"):
            raise NotFittedError("TailCalibrator is not fitted yet; call fit() first")
        x = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
        s, dropped = self.sorted_, self.n_dropped_
        n = s.size + dropped
        body = (n - (dropped + np.searchsorted(s, x, side="left")) + 1.0) / (n + 1.0)
        tail = self.p_threshold_ * np.exp(-np.maximum(x - self.threshold_, 0.0) / self.beta_)
        return np.where(x > self.threshold_, np.minimum(tail, body), body)

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated ``anomaly_score`` in [0, 1], monotone in the raw score."""
        return np.exp(-self.survival(scores) * self.horizon_points_)
