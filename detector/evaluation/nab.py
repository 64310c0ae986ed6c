"""Numenta Anomaly Benchmark (NAB) scoring.

Implements the scoring of Lavin & Ahmad (2015), "Evaluating Real-time Anomaly
Detection Algorithms -- the Numenta Anomaly Benchmark" (arXiv:1510.03336), with
the details of NAB's reference sweeper (``nab/sweeper.py``) and runner
(``nab/runner.py``), so that published NAB results are reproduced exactly:

* a detection inside a window is worth ``tp * S(pos) / S(-1)`` where
  ``S(y) = 2 / (1 + exp(5 y)) - 1`` and ``pos = -(end - i + 1) / width``; only the
  earliest detection of a window counts, so a detection on the first row of a
  window is worth exactly ``tp``;
* a window without any detection costs ``-fn``;
* a detection outside every window costs ``fp * S((i - end) / (width - 1))``
  relative to the closest preceding window, or ``-fp`` when there is none (or
  it is more than three widths away);
* rows of the probationary period are ignored entirely;
* the corpus score is ``100 * (raw - null) / (perfect - null)`` with ``null`` the
  raw score of never detecting and ``perfect = tp * number of windows``;
* the threshold of a profile is optimised over the whole corpus by evaluating
  every distinct anomaly score as a threshold (a detection is ``score >= t``).

Reading the corpus, its windows and the probationary period is
:mod:`detector.evaluation.nab_data`'s part; its public names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.evaluation.nab_data import (
    Windows,
    load_corpus,
    load_windows,
    probationary_length,
    window_rows,
)

__all__ = [
    "PROFILES",
    "CorpusScore",
    "CostProfile",
    "Windows",
    "load_corpus",
    "load_windows",
    "probationary_length",
    "score_all_profiles",
    "score_corpus",
]


@dataclass(frozen=True)
class CostProfile:
    """Weights of one NAB application profile.

    Attributes
    ----------
    tp, fp, fn, tn : float
        Weights of true positives, false positives, false negatives and true
        negatives (``tn`` is part of NAB's profiles but does not enter the score).
    """

    tp: float
    fp: float
    fn: float
    tn: float


PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(tp=1.0, fp=0.11, fn=1.0, tn=1.0),
    "reward_low_FP_rate": CostProfile(tp=1.0, fp=0.22, fn=1.0, tn=1.0),
    "reward_low_FN_rate": CostProfile(tp=1.0, fp=0.11, fn=2.0, tn=1.0),
}


@dataclass(frozen=True)
class CorpusScore:
    """NAB score of a detector on a corpus for one profile and threshold.

    Attributes
    ----------
    profile : str
        Name of the cost profile (a key of `PROFILES`).
    threshold : float
        Threshold used; a row is a detection when its score is ``>= threshold``.
        ``inf`` when never detecting is optimal.
    score : float
        Normalised score: 0 for the null detector, 100 for the perfect one
        (negative when worse than never detecting).
    raw, null, perfect : float
        Raw corpus score and the raw scores of the null and perfect detectors.
    tp : int
        Windows detected at least once (outside the probationary period).
    fp : int
        Detections outside every window (outside the probationary period).
    fn : int
        Scorable windows without any detection.
    """

    profile: str
    threshold: float
    score: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class _Sweep:
    """Profile-independent sums with every row scoring ``>= thresholds[k]`` detected."""

    thresholds: np.ndarray  # descending; thresholds[0] == inf is "never detect"
    fp_unit: np.ndarray  # sum of unweighted FP costs of detected outside rows
    tp_unit: np.ndarray  # sum over detected windows of S(pos) / S(-1)
    detected: np.ndarray  # number of windows detected
    fp_count: np.ndarray  # number of detected outside rows
    n_scorable: int  # windows with at least one row after probation
    n_windows: int


def _scaled_sigmoid(y: np.ndarray) -> np.ndarray:
    # Clipping keeps exp() finite; NAB maps everything past 3 widths to exactly -1.
    value = 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0
    return np.where(y > 3.0, -1.0, value)


_MAX_TP = float(_scaled_sigmoid(np.array(-1.0)))


def _file_rows(
    name: str, timestamps: np.ndarray, scores: np.ndarray, windows: Windows
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per scorable row: score, unweighted sweep value and window number (-1 outside).

    Also returns the number of windows that have a row after the probationary period.
    """
    index = pd.DatetimeIndex(timestamps)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    ts = index.to_numpy(dtype="datetime64[ns]")
    if ts.shape != scores.shape or scores.ndim != 1:
        raise ValueError(f"{name}: timestamps and scores must be 1-D arrays of equal length")
    n = ts.size
    rows = np.arange(n, dtype=np.int64)
    first, last = window_rows(name, ts, windows)
    width = last - first + 1

    # Closest window starting at or before each row: the one the row is in, if any.
    k = np.searchsorted(first, rows, side="right") - 1
    # The -1 sentinel at index -1 makes rows before the first window (k == -1) outside.
    inside = rows <= np.r_[last, -1][k]
    # Closest window ending strictly before each row, for false positives.
    prev = np.searchsorted(last, rows, side="left") - 1

    unit = np.full(n, -1.0)
    ki = k[inside]
    unit[inside] = _scaled_sigmoid(-(last[ki] - rows[inside] + 1) / width[ki]) / _MAX_TP
    after = ~inside & (prev >= 0)
    kp = prev[after]
    # A one-row window has no extent to measure distance by (NAB divides by zero).
    denom = np.maximum(width[kp] - 1, 0).astype(float)
    dist = np.divide(rows[after] - last[kp], denom, out=np.full(kp.size, np.inf), where=denom > 0)
    unit[after] = _scaled_sigmoid(dist)

    window = np.where(inside, k, -1)
    keep = (rows >= probationary_length(n)) & ~np.isnan(scores)
    n_scorable = int(np.count_nonzero(last >= probationary_length(n)))
    return scores[keep], unit[keep], window[keep], n_scorable


def _corpus_rows(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]], windows: Mapping[str, Windows]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Every file's scorable rows (score, unit value, window number) end to end, file by file.

    Also returns the numbers of scorable windows and of all windows in the corpus.
    """
    parts = []
    offset = n_scorable = n_windows = 0
    for name in sorted(results):
        timestamps, raw_scores = results[name]
        scores = np.asarray(raw_scores, dtype=np.float64)
        s, u, w, scorable = _file_rows(name, np.asarray(timestamps), scores, windows[name])
        # Number windows corpus-wide so that one sweep handles every file.
        parts.append((s, u, np.where(w >= 0, w + offset, -1)))
        offset += len(windows[name])
        n_scorable += scorable
        n_windows += len(windows[name])
    score, unit, window = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return score, unit, window, n_scorable, n_windows


def _window_gains(
    score: np.ndarray, unit: np.ndarray, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: inside a window, its true-positive gain, and whether it detects a new window."""
    # Every row is an event changing the corpus score once the threshold reaches
    # its score: an outside row adds its FP cost; a row inside a window adds how
    # much it improves the window's earliest detection so far, in the window's
    # descending-score order (plus the recovered FN cost for the window's first).
    inside = window >= 0
    pos = np.flatnonzero(inside)
    pos = pos[np.lexsort((-score[pos], window[pos]))]
    win = window[pos]
    # Running minimum of row position per window via one global running maximum
    # over integer keys whose window part dominates (exact, unlike float offsets).
    span = np.int64(score.size + 1)
    key = np.maximum.accumulate(win * span + (span - 1 - pos))
    best = unit[(span - 1) - (key - win * span)]
    first_of_window = np.r_[True, win[1:] != win[:-1]]
    tp_gain = np.zeros(score.size)
    tp_gain[pos] = best - np.where(first_of_window, 0.0, np.r_[0.0, best[:-1]])
    detected = np.zeros(score.size, dtype=np.int64)
    detected[pos] = first_of_window
    return inside, tp_gain, detected


def _prepare(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]], windows: Mapping[str, Windows]
) -> _Sweep:
    if not results:
        raise ValueError("no results to score")
    missing_windows = sorted(set(results) - set(windows))
    missing_results = sorted(set(windows) - set(results))
    if missing_windows:
        raise ValueError(f"no anomaly windows for results file(s): {missing_windows}")
    if missing_results:
        raise ValueError(f"no results for corpus file(s): {missing_results}")

    score, unit, window, n_scorable, n_windows = _corpus_rows(results, windows)
    inside, tp_gain, detected = _window_gains(score, unit, window)

    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    # The state at a threshold includes every row with an equal score.
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], ranked.size > 0])

    def cum(values: np.ndarray) -> np.ndarray:
        return np.r_[0, np.cumsum(values[order])[ends]]

    return _Sweep(
        thresholds=np.r_[np.inf, ranked[ends]],
        fp_unit=cum(np.where(inside, 0.0, unit)),
        tp_unit=cum(tp_gain),
        detected=cum(detected).astype(np.int64),
        fp_count=cum((~inside).astype(np.int64)).astype(np.int64),
        n_scorable=n_scorable,
        n_windows=n_windows,
    )


def _evaluate(sweep: _Sweep, profile: str, threshold: float | None) -> CorpusScore:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    cost = PROFILES[profile]
    null = -cost.fn * sweep.n_scorable
    perfect = cost.tp * sweep.n_windows
    if perfect == null:
        raise ValueError("the corpus has no anomaly window to score against")
    raw = null + cost.fp * sweep.fp_unit + cost.tp * sweep.tp_unit + cost.fn * sweep.detected
    if threshold is None:
        # argmax keeps the first maximum, i.e. the highest threshold, like NAB's stable sort.
        k = int(np.argmax(raw))
        threshold = float(sweep.thresholds[k])
    else:
        # Thresholds descend: the state is the last one whose threshold is >= the given one.
        k = int(np.searchsorted(-sweep.thresholds, -threshold, side="right")) - 1
    return CorpusScore(
        profile=profile,
        threshold=float(threshold),
        score=float(100.0 * (raw[k] - null) / (perfect - null)),
        raw=float(raw[k]),
        null=float(null),
        perfect=float(perfect),
        tp=int(sweep.detected[k]),
        fp=int(sweep.fp_count[k]),
        fn=int(sweep.n_scorable - sweep.detected[k]),
    )


def score_corpus(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]],
    windows: Mapping[str, Windows],
    profile: str = "standard",
    threshold: float | None = None,
) -> CorpusScore:
    """NAB score of a detector's anomaly scores on a whole corpus.

    Parameters
    ----------
    results : Mapping of str to (ndarray, ndarray)
        File name to (timestamps as ``datetime64[ns]``, naive UTC, in time
        order; anomaly scores). NaN scores never count as detections.
    windows : Mapping of str to Windows
        Anomaly windows of every file; must cover exactly the files of `results`.
    profile : str, default "standard"
        Key of `PROFILES`.
    threshold : float, optional
        Detection threshold (``score >= threshold``); ``None`` optimises it over
        the corpus by trying every distinct score, as NAB's sweeper does.

    Returns
    -------
    CorpusScore
        Normalised and raw scores, threshold and counts.

    Raises
    ------
    ValueError
        If the files of `results` and `windows` differ (naming them), a file's
        arrays are malformed, a window has no rows or the profile is unknown.
    """
    return _evaluate(_prepare(results, windows), profile, threshold)


def score_all_profiles(
    results: Mapping[str, tuple[np.ndarray, np.ndarray]],
    windows: Mapping[str, Windows],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, CorpusScore]:
    """`score_corpus` for every profile of `PROFILES`, preprocessing only once.

    Parameters
    ----------
    results, windows
        As for `score_corpus`.
    thresholds : Mapping of str to float, optional
        Fixed threshold per profile; profiles absent from it are optimised.

    Returns
    -------
    dict of str to CorpusScore
        Profile name to its score.
    """
    sweep = _prepare(results, windows)
    fixed = thresholds or {}
    return {name: _evaluate(sweep, name, fixed.get(name)) for name in PROFILES}
