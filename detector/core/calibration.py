"""Calibration: raw detector scores to ``anomaly_score`` in [0, 1].

A raw score's rarity is its survival probability ``p`` among the scores seen on training data:
empirical in the body, and beyond a high quantile an exponential tail fitted robustly to the
exceedances (peaks over threshold), so scores larger than anything seen in training still get a
graded, finite rarity. The calibrated score is ``exp(-p * n)`` with ``n`` the number of points in a
reference horizon (one day by default): the probability that a whole normal day would not produce a
score this high. A value seen a few times a day maps near 0, one rarer than once a week above 0.85,
so one threshold means the same for every signal and detector.

:class:`TailCalibrator` calibrates one score column; :class:`CalibratorBank` holds many fitted
calibrators in arrays and calibrates all their columns with one set of array operations.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping

import numpy as np
from scipy.special import log_ndtr

from detector.core.base import BaseDetector, NotFittedError, check_choice, check_range

__all__ = ["CalibratorBank", "TailCalibrator", "calibrate_families"]

# For a normal distribution: the 98th percentile in deviations above the median, and the scale of
# the exponential fitted (median excess / ln 2) to what lies beyond it, in deviations.
_Q98_OVER_MEDIAN = 2.054
_NORMAL_TAIL_BETA = 0.39


class TailCalibrator:
    """Map raw scores to [0, 1] through the training score distribution.

    Parameters
    ----------
    tail_quantile : float
        Quantile above which the tail is modelled as exponential.
    min_tail_points : int
        The tail is fitted to at least this many exceedances (the quantile drops on short data).
    tail : {"exponential", "normal"}
        ``"exponential"`` fits the tail to the training exceedances. ``"normal"`` is for scores
        that are normal scores by construction (counts scored against a Poisson model): beyond
        the tail quantile the survival follows the standard normal tail, anchored at the
        empirical survival there, so that evidence far beyond anything seen in training is read
        as the model says rather than extrapolated from a lumpy handful of exceedances.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cal = TailCalibrator().fit(np.abs(rng.normal(size=10_000)), horizon_points=2880)
    >>> cal.transform(np.array([0.0, 2.0, 6.0])).round(2).tolist()
    [0.0, 0.0, 1.0]
    """

    def __init__(
        self, *, tail_quantile: float = 0.98, min_tail_points: int = 10, tail: str = "exponential"
    ) -> None:
        self.tail_quantile = tail_quantile
        self.min_tail_points = min_tail_points
        self.tail = tail

    def fit(self, scores: np.ndarray, *, horizon_points: float) -> TailCalibrator:
        """Learn the score distribution; ``horizon_points`` is the reference horizon's size."""
        check_range("tail_quantile", self.tail_quantile, 0.5, 1.0, closed="left")
        check_range("min_tail_points", self.min_tail_points, 1, 1e9)
        check_range("horizon_points", horizon_points, 1.0, np.inf, closed="left")
        check_choice("tail", self.tail, ("exponential", "normal"))
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
        # A smooth score (a window mean) crosses the tail quantile in a few long clusters whose
        # excesses are small: read as the tail, they would make anything just beyond the training
        # maximum look impossibly rare. The tail is never taken lighter than a normal one with
        # the same body (whose exponential fit above the 98th percentile has about this scale).
        body = float(u - np.quantile(s, 0.5)) / _Q98_OVER_MEDIAN
        beta = max(beta, _NORMAL_TAIL_BETA * body)
        self.beta_ = max(beta, 1e-6 * (1.0 + abs(u)))
        self.threshold_ = u
        self.p_threshold_ = float(np.mean(s >= u)) if s.size else 1.0
        self.normal_tail_ = self.tail == "normal"
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
        above = np.count_nonzero(s >= self.threshold_)
        keep = int(_kept(above, s.size + self.n_dropped_, self.horizon_points_, precision))
        if keep < s.size:
            self.n_dropped_ += s.size - keep
            self.sorted_ = s[s.size - keep :].copy()
        return self

    def survival(self, scores: np.ndarray) -> np.ndarray:
        """Estimated probability that a normal point scores at least this high."""
        if not hasattr(self, "sorted_"):
            raise NotFittedError("TailCalibrator is not fitted yet; call fit() first")
        x = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
        below = np.searchsorted(self.sorted_, x, side="left")
        n = self.sorted_.size + self.n_dropped_
        return _survival(
            x,
            below,
            n,
            self.n_dropped_,
            self.threshold_,
            self.beta_,
            self.p_threshold_,
            np.array(self.normal_tail_),
        )

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated ``anomaly_score`` in [0, 1], monotone in the raw score."""
        return np.exp(-self.survival(scores) * self.horizon_points_)


class CalibratorBank:
    """Fitted :class:`TailCalibrator` objects in arrays, one per score column, applied together.

    ``labels`` are the mapping's keys, in the order of the columns :meth:`transform` expects;
    iterating gives them too.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fitted = {k: TailCalibrator().fit(rng.exponential(size=500), horizon_points=288)
    ...           for k in ("a", "b")}
    >>> bank = CalibratorBank(fitted)
    >>> list(bank), bank.transform(np.array([[0.0, 12.0]])).round(2).tolist()
    (['a', 'b'], [[0.0, 0.98]])
    """

    # Copies of each column's lowest kept score folded into a count by :meth:`compact` (one
    # copy stays in ``values``); None in banks saved before it did (none folded).
    tied: np.ndarray | None = None

    def __init__(self, calibrators: Mapping[Hashable, TailCalibrator]) -> None:
        fitted = list(calibrators.values())
        if any(not hasattr(cal, "sorted_") for cal in fitted):
            raise NotFittedError("every calibrator must be fitted; call fit() first")
        self.labels = list(calibrators)
        self.threshold = np.array([cal.threshold_ for cal in fitted])
        self.beta = np.array([cal.beta_ for cal in fitted])
        self.p_threshold = np.array([cal.p_threshold_ for cal in fitted])
        self.horizon_points = np.array([cal.horizon_points_ for cal in fitted])
        self.normal = np.array([cal.normal_tail_ for cal in fitted], dtype=bool)
        self.n_dropped = np.array([cal.n_dropped_ for cal in fitted], dtype=np.int64)
        # Every calibrator's sorted scores one after another: column j's are
        # ``values[start[j] : start[j] + size[j]]``.
        self._set_values(
            np.concatenate([cal.sorted_ for cal in fitted]) if fitted else np.zeros(0),
            np.array([cal.sorted_.size for cal in fitted], dtype=np.int64),
        )

    def _set_values(self, values: np.ndarray, size: np.ndarray) -> None:
        self.values, self.size = values, size
        self.start = np.cumsum(size) - size

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def compact(self, *, precision: float = 40.0) -> CalibratorBank:
        """:meth:`TailCalibrator.compact` for every calibrator; then the copies of each column's
        lowest kept score become a count (one copy stays), which changes no calibrated score.

        The ties matter: a score that is 0 on most training rows (a sustained shift's) has its
        tail threshold at 0, so every training score is "at or above the threshold" and kept.
        """
        tied = self._tied()
        held = self.size + tied  # kept scores, the folded copies included
        above = held - self._below(self.threshold[None, :])[0]
        total = held + self.n_dropped
        drop = held - np.minimum(_kept(above, total, self.horizon_points, precision), held)
        # The lowest scores go first: the folded copies, then the column's stretch of values.
        from_values = np.maximum(drop - tied, 0)
        rank = np.arange(self.values.size) - np.repeat(self.start, self.size)
        values = self.values[rank >= np.repeat(from_values, self.size)]
        size = self.size - from_values
        self.n_dropped = self.n_dropped + drop
        start = np.cumsum(size) - size
        first = np.repeat(values[np.minimum(start, max(values.size - 1, 0))], size)
        fold = (values == first) & (np.arange(values.size) - np.repeat(start, size) > 0)
        folded = np.bincount(np.repeat(np.arange(size.size), size)[fold], minlength=size.size)
        self.tied = tied - (drop - from_values) + folded
        self._set_values(values[~fold].copy(), size - folded)
        return self

    def _tied(self) -> np.ndarray:
        return self.tied if self.tied is not None else np.zeros_like(self.size)

    def _below(self, x: np.ndarray) -> np.ndarray:
        """How many of column j's kept scores (the folded copies too) are below ``x[:, j]``."""
        below = self._count_below(x)
        tied = self._tied()
        if not tied.any():
            return below
        floor = self.values[np.minimum(self.start, max(self.values.size - 1, 0))]
        return below + tied * (x > floor)

    def survival(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`TailCalibrator.survival` of each column of ``scores`` (rows, calibrators)."""
        x = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
        n = self.size + self._tied() + self.n_dropped
        below = self._below(x)
        return _survival(
            x, below, n, self.n_dropped, self.threshold, self.beta, self.p_threshold, self.normal
        )

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated ``anomaly_score`` of each column of ``scores`` (rows, calibrators)."""
        return np.exp(-self.survival(scores) * self.horizon_points)

    def _count_below(self, x: np.ndarray) -> np.ndarray:
        """How many of column j's kept scores are below ``x[:, j]``: ``searchsorted`` per column.

        A binary search run on every cell at once; each step halves every cell's interval.
        """
        lo = np.zeros(x.shape, dtype=np.int64)
        hi = np.broadcast_to(self.size, x.shape).copy()
        last = max(self.values.size - 1, 0)
        for _ in range(int(self.size.max(initial=0)).bit_length()):
            mid = (lo + hi) // 2
            searching = lo < hi
            less = self.values[np.minimum(self.start + mid, last)] < x
            lo = np.where(searching & less, mid + 1, lo)
            hi = np.where(searching & ~less, mid, hi)
        return lo


def _kept(
    above: np.ndarray, total: np.ndarray, horizon: np.ndarray, precision: float
) -> np.ndarray:
    """How many of the highest scores :meth:`TailCalibrator.compact` keeps (see there)."""
    needed = np.ceil(total * precision / horizon).astype(np.int64)
    return np.maximum(np.maximum(above, needed), 1)


def _survival(
    x: np.ndarray,
    below: np.ndarray,
    n: np.ndarray,
    dropped: np.ndarray,
    threshold: np.ndarray,
    beta: np.ndarray,
    p_threshold: np.ndarray,
    normal: np.ndarray,
) -> np.ndarray:
    """Empirical survival in the body; beyond ``threshold`` the fitted exponential, or where
    ``normal`` the standard normal tail anchored at the survival at ``threshold``.

    ``below`` counts the kept training scores below each ``x``; ``n`` is how many there were
    in all, ``dropped`` how many lowest ones were left out by compaction.
    """
    body = (n - (dropped + below) + 1.0) / (n + 1.0)
    excess = np.maximum(x - threshold, 0.0)
    with np.errstate(over="ignore"):  # a score of 1e300 is as rare as it gets: 0
        tail = p_threshold * np.exp(-excess / beta)
    if np.any(normal):
        # The ratio of normal tails, computed in log space so that it does not underflow.
        ratio = np.exp(log_ndtr(-np.maximum(x, threshold)) - log_ndtr(-threshold))
        tail = np.where(normal, p_threshold * ratio, tail)
    return np.where(x > threshold, np.minimum(tail, body), body)


def calibrate_families(
    members: Mapping[str, BaseDetector],
    raw: Mapping[str, np.ndarray],
    counted: set[str],
    horizon_points: float,
    skip: int,
) -> CalibratorBank:
    """One calibrator per (signal or joint column, family), fitted on the raw training scores
    after the first ``skip`` rows, in the order of the scores' columns.

    A column of a ``counted`` signal (a ratio scored as counts) gets a normal tail, as its
    scores are normal scores; every other column's tail starts where its family says.
    """
    calibrators = {}
    for family, scores in raw.items():
        member = members[family]
        for j, column in enumerate(member.alarm_columns_):
            if column in counted and not member.joint:
                cal = TailCalibrator(tail="normal")
            else:
                cal = TailCalibrator(tail_quantile=member.tail_quantile)
            calibrators[(column, family)] = cal.fit(scores[skip:, j], horizon_points=horizon_points)
    return CalibratorBank(calibrators)
