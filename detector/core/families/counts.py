"""Ratios of counts, scored as the proportions they are.

An error ratio is failures over requests in a step. At night a step may hold a dozen requests,
so one failure is 8 % and ordinary, while by day 4 % held for ten minutes is an incident. A scale
per time of day cannot tell these apart: the night's values are mostly 0 with rare large ones.
Counting can. Each row of a ratio ``r`` is read as ``k = r * n`` events out of ``n`` trials,
with ``n`` the requests behind the row, and scored by how surprising ``k`` is when ``n * p`` are
expected (a Poisson tail, mid-p, as a signed normal score). Windows of rows are scored the same
way from their summed counts, which is what finds 4 % held for ten minutes at one request per
second.

Where the trials come from:

* **A denominator** (``denominators={"error_ratio": "requests_per_second"}``): the rate signal
  times the step gives the requests behind each row. Real counts are overdispersed (requests
  come in bursts, failures in clusters), so the trials are divided by a dispersion ``phi``
  fitted on the training rows (Pearson's statistic), a quasi-Poisson model.
* **None given**: the other signals of the frame are tried as the denominator. The one under
  which the ratio's spread is the same at every hour of every day (a proportion's variance is
  ``p (1 - p) / n``, so only the real request rate makes night and day, weekday and weekend
  alike) is taken, unless the time of day alone explains the spread clearly better: a
  denominator has one parameter where the time of day has one per bin, fitted to the same
  days, and only the denominator knows a weekend it has not seen.
* **None at all**: the trials per time-of-day bin are inferred from the ratio itself, as
  ``p (1 - p) / var(r)``. Night bins get few, day bins many: the noise scale as a function of
  traffic, as far as the time of day tells it. The same inference is the fallback for rows
  whose denominator is missing.

A column is treated as a ratio when it has a denominator, or when its training values all lie in
[0, 1], at least 5 % of them are exactly 0, some are not, and the median is below 0.2 (a
rare-event proportion).

Examples
--------
>>> normal_score(np.array([0.0, 1.0, 24.0]), np.array([0.024, 0.024, 6.0])).round(2).tolist()
[-0.03, 2.26, 5.54]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammainc, ndtri

from detector.core.timeutil import DAY_S, phase_lookup, phase_of

__all__ = [
    "CountColumns",
    "denominator_trials",
    "fit_counts",
    "looks_like_ratio",
    "normal_score",
    "ratio_columns",
]

# Normal scores are capped where the Poisson tail probability nears the smallest double.
_MAX_Z = 30.0
_MIN_ROWS = 50
# Rows of a bin that count as much as the whole series when its trials are shrunk together.
_SHRINK_ROWS = 30.0
# A signal is taken as a ratio's denominator unless it leaves the ratio's spread clearly less
# even than the time of day does (misfit above _WORSE times the time of day's plus _SLACK);
# blocks of _BLOCK_S are compared.
_WORSE, _SLACK = 2.0, 0.02
_BLOCK_S = 3 * 3600.0
# The expected proportion never falls below this share of the training proportion.
_FLOOR_SHARE = 0.25


# Share of a series' variance that its hour of day explains above which it is a level that
# follows the day (a cache's use), not a proportion of rare events: those measure below 0.01 on
# the scenarios and 0.06 on NAB, a KV cache's use about 0.7.
_MAX_DAILY_SHARE = 0.3


def looks_like_ratio(x: np.ndarray, t: np.ndarray | None = None) -> bool:
    """Whether training values look like a proportion of rare events.

    In [0, 1], often exactly 0 and mostly small; and, when times ``t`` (seconds) spanning a day
    are given, without a strong daily profile: a proportion of rare events (errors over
    requests) is the same all day however the traffic moves, while a share of a capacity (a KV
    cache's use) rises and falls with the day's load, and its idle nights are 0 too.

    >>> looks_like_ratio(np.r_[np.zeros(90), np.full(10, 0.05)])
    True
    >>> looks_like_ratio(np.linspace(0.0, 5.0, 100))
    False
    >>> t = np.arange(0.0, 4 * 86400, 600)
    >>> busy = np.clip(np.sin(2 * np.pi * t / 86400), 0.0, None) * 0.2  # idle every night
    >>> looks_like_ratio(busy), looks_like_ratio(busy, t)
    (True, False)
    """
    ok = np.isfinite(x)
    x = x[ok]
    if x.size < _MIN_ROWS or x.min() < 0.0 or x.max() > 1.0 or x.max() == 0.0:
        return False
    if not (np.mean(x == 0.0) >= 0.05 and np.median(x) < 0.2):
        return False
    return t is None or _daily_share(np.asarray(t, dtype=np.float64)[ok], x) < _MAX_DAILY_SHARE


def ratio_columns(
    values: np.ndarray, t: np.ndarray, given: np.ndarray | None, *, auto: bool
) -> np.ndarray:
    """Which columns are scored as ratios of counts: those given trials, and with ``auto``
    those that look like proportions of rare events (:func:`looks_like_ratio`)."""
    return np.array(
        [
            (given is not None and bool(np.isfinite(given[:, j]).any()))
            or (auto and looks_like_ratio(values[:, j], t))
            for j in range(values.shape[1])
        ],
        dtype=bool,
    )


def _daily_share(t: np.ndarray, x: np.ndarray, bins: int = 24) -> float:
    """Share of the variance of ``x`` explained by the hour of day (0 with less than a day)."""
    if t.size < 2 or t[-1] - t[0] < DAY_S:
        return 0.0
    hour = ((t % DAY_S) * bins // DAY_S).astype(np.int64)
    count = np.bincount(hour, minlength=bins)
    mean = np.bincount(hour, weights=x, minlength=bins) / np.maximum(count, 1)
    total = float(np.sum((x - x.mean()) ** 2))
    return 0.0 if total <= 0.0 else 1.0 - float(np.sum((x - mean[hour]) ** 2)) / total


def normal_score(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Signed normal score of ``k`` events where ``lam`` are expected (Poisson, mid-p).

    Positive when more events than expected were seen; ``k`` need not be an integer (trials
    scaled by a dispersion are not), the tail is continued smoothly between integers.
    """
    k = np.asarray(k, dtype=np.float64)
    lam = np.maximum(np.asarray(lam, dtype=np.float64), 1e-300)
    missing = ~np.isfinite(k) | ~np.isfinite(lam)
    k = np.where(missing, 0.0, np.maximum(k, 0.0))
    lam = np.where(missing, 1.0, lam)
    # P(K >= k) is the regularised lower incomplete gamma function of (k, lam), 1 at k = 0; the
    # mid-p value averages P(K >= k) and P(K >= k + 1). Near 1 it loses precision, but only for
    # scores far below the cap on the low side, where nothing is decided.
    at_least = np.where(k > 0.0, gammainc(np.maximum(k, 1e-300), lam), 1.0)
    z = -ndtri(0.5 * (at_least + gammainc(k + 1.0, lam)))
    return np.where(missing, np.nan, np.clip(z, -_MAX_Z, _MAX_Z))


def denominator_trials(
    frame: pd.DataFrame,
    denominators: Mapping[str, str],
    step_s: float,
    trials: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``trials`` (or none) with each ratio's requests per row: its rate signal times the step.

    Raises ``ValueError`` naming a ratio or rate that is not a column of ``frame``.

    >>> idx = pd.date_range("2026-01-05", periods=2, freq="30s")
    >>> frame = pd.DataFrame({"errors": [0.0, 0.1], "rps": [2.0, 1.0]}, index=idx)
    >>> denominator_trials(frame, {"errors": "rps"}, 30.0)["errors"].tolist()
    [60.0, 30.0]
    """
    for ratio, rate in denominators.items():
        for name in (ratio, rate):
            if name not in frame.columns:
                raise ValueError(
                    f"denominators: {name!r} is not a signal of the frame; "
                    f"signals: {list(frame.columns)}"
                )
    out = trials.copy() if trials is not None else pd.DataFrame(index=frame.index)
    for ratio, rate in denominators.items():
        out[ratio] = frame[rate].to_numpy() * step_s
    return out


@dataclass
class CountColumns:
    """The ratio columns of a fitted baseline and what is known of their trials.

    ``columns`` are positions among the baseline's signals; the other arrays have one entry (or
    row) per ratio column, in that order.
    """

    columns: np.ndarray
    trials: np.ndarray  # (ratios, bins) effective trials per time-of-day bin, inferred
    dispersion: np.ndarray  # phi dividing the trials a denominator gives; NaN without one
    source: np.ndarray  # position of the signal found to be the denominator; -1 for none
    mean: np.ndarray  # training proportion
    floor: np.ndarray  # smallest expected proportion (see ``_FLOOR_SHARE``)
    step_s: float  # the step a denominator's rate is multiplied by

    @classmethod
    def none(cls, bins: int, step_s: float) -> CountColumns:
        """No ratio column."""
        empty, none = np.zeros(0), np.zeros(0, dtype=np.int64)
        return cls(none, np.zeros((0, bins)), empty, none.copy(), empty, empty, step_s)

    def effective_trials(
        self, t: np.ndarray, values: np.ndarray, trials: np.ndarray | None
    ) -> np.ndarray:
        """Effective trials of each ratio column at each time, (times, ratios).

        ``values`` are all the baseline's signals (for denominators found among them);
        ``trials`` the given denominators' trials per row of each ratio column (NaN where
        unknown) or None. Where neither says, the inferred trials of the time of day are used.
        """
        inferred = phase_lookup(self.trials, DAY_S, t).T
        given = np.full(inferred.shape, np.nan) if trials is None else trials.copy()
        found = self.source >= 0
        # An absurd rate (1e308 requests/s) overflows: no trials known for that row.
        with np.errstate(over="ignore", invalid="ignore"):
            if found.any():
                rate = values[:, self.source[found]] * self.step_s
                given[:, found] = np.where(np.isfinite(given[:, found]), given[:, found], rate)
            given = given / self.dispersion
        return np.where(np.isfinite(given) & (given > 0), given, inferred)


def fit_counts(
    t: np.ndarray,
    values: np.ndarray,
    trials: np.ndarray | None,
    *,
    ratios: np.ndarray,
    bins: int,
    step_s: float,
) -> CountColumns:
    """Fit the ratio columns ``ratios`` (a boolean mask over the columns of ``values``).

    ``trials`` holds the denominators' trials per row (NaN where a column has none).
    """
    columns = np.flatnonzero(ratios)
    if columns.size == 0:
        return CountColumns.none(bins, step_s)
    key = phase_of(t, DAY_S, DAY_S / bins)
    candidates = [c for c in range(values.shape[1]) if not ratios[c] and _rate_like(values[:, c])]
    table, dispersion, source, mean, floor = [], [], [], [], []
    for j in columns:
        x = values[:, j]
        ok = np.isfinite(x)
        p = float(np.clip(np.mean(x[ok]) if ok.any() else 0.0, 1e-9, 1 - 1e-9))
        n_bins = _inferred_trials(key[ok], x[ok], p, bins)
        n, found = None, -1
        if trials is not None and np.isfinite(trials[:, j]).any():
            n = trials[:, j]
        elif candidates:
            by_time = np.full(x.size, np.nan)
            by_time[ok] = n_bins[key[ok]]
            best = _WORSE * _misfit(t, x, by_time, p) + _SLACK
            for c in candidates:
                misfit = _misfit(t, x, values[:, c] * step_s, p)
                if misfit <= best:
                    best, n, found = misfit, values[:, c] * step_s, c
        phi = np.nan if n is None else _dispersion(x, n, p)
        effective = n_bins[key[ok]] if n is None else n[ok] / phi
        total = float(np.nansum(effective))
        table.append(n_bins)
        dispersion.append(phi)
        source.append(found)
        mean.append(p)
        # A tracker can settle on 0 after a few empty rows (three quiet steps at night after an
        # incident); expecting no event at all would then make any single one impossible.
        floor.append(max(_FLOOR_SHARE * p, min(0.5 / total, p) if total > 0 else p))
    return CountColumns(
        columns,
        np.array(table),
        np.array(dispersion),
        np.array(source, dtype=np.int64),
        np.array(mean),
        np.array(floor),
        step_s,
    )


def _rate_like(x: np.ndarray) -> bool:
    """Whether a column could be a request rate: never negative, mostly positive."""
    x = x[np.isfinite(x)]
    return bool(x.size >= _MIN_ROWS and x.min() >= 0.0 and np.median(x) > 0.0)


def _misfit(t: np.ndarray, x: np.ndarray, n: np.ndarray, p: float) -> float:
    """How unevenly the counts ``x * n`` spread around ``p * n`` across the day and the week.

    The median over three-hour blocks (with at least five events expected) of the squared log
    of the block's Pearson dispersion relative to the whole series'; 0 when every block spreads
    alike, infinite without enough blocks to tell.
    """
    ok = np.isfinite(x) & np.isfinite(n) & (n > 0)
    lam = p * n[ok]
    pearson = (x[ok] * n[ok] - lam) ** 2 / (lam * (1.0 - p))
    block = np.floor((t[ok] - t[0]) / _BLOCK_S).astype(np.int64)
    spread = np.bincount(block, weights=pearson)
    rows = np.bincount(block).astype(np.float64)
    use = np.bincount(block, weights=lam) >= 5.0
    if use.sum() < 4:
        return np.inf
    each = spread[use] / rows[use]
    return float(np.median(np.log(each / np.median(each)) ** 2))


def _inferred_trials(key: np.ndarray, x: np.ndarray, p: float, bins: int) -> np.ndarray:
    """Trials per time-of-day bin from the spread of the proportion: ``p (1 - p) / var``.

    Bins are shrunk towards the whole series in log space by how few rows they hold.
    """
    binomial = p * (1.0 - p)
    overall = binomial / max(float(np.var(x)), 1e-300) if x.size > 1 else 1.0
    rows = np.bincount(key, minlength=bins).astype(np.float64)
    total = np.bincount(key, weights=x, minlength=bins)
    squares = np.bincount(key, weights=x * x, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = squares / rows - (total / rows) ** 2
        per_bin = np.where(var > 0, binomial / var, overall)
    logs = np.log(np.clip(np.nan_to_num(per_bin, nan=overall), 1.0, 1e7))
    shrunk = (rows * logs + _SHRINK_ROWS * np.log(np.clip(overall, 1.0, 1e7))) / (
        rows + _SHRINK_ROWS
    )
    return np.exp(shrunk)


def _dispersion(x: np.ndarray, n: np.ndarray, p: float) -> float:
    """Pearson's dispersion of the counts ``x * n`` around ``p * n``; NaN without usable rows.

    The top 0.1 % of the squared residuals are left out, so that an incident in the training
    window does not pass for ordinary spread.
    """
    ok = np.isfinite(x) & np.isfinite(n) & (n > 0)
    if ok.sum() < _MIN_ROWS:
        return np.nan
    lam = p * n[ok]
    pearson = np.sort((x[ok] * n[ok] - lam) ** 2 / (lam * (1.0 - p)))
    kept = pearson[: max(1, int(np.ceil(0.999 * pearson.size)))]
    return float(np.clip(np.mean(kept), 0.05, 1e3))
