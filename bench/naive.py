"""Naive reference: the default ensemble written the obvious way, one point at a time in Python.

This is the yardstick ``bench/run.py`` compares against. It follows the mathematics of ``detector``
(llmwatch 0.2) with default parameters (seasonal and level-shift families, values modelled as
they are, automatic level half-life, fast and slow level trackers, median-excess tail
calibration, hysteresis, the refractory period, the causal refit loop). It loops over points with
plain floats, lists, dicts, ``statistics.median`` and ``bisect`` instead of arrays. STL is still
statsmodels': a hand-written STL would be a different algorithm rather than a slower one, and it
only ever sees the short series of bin medians.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pandas as pd
from statsmodels.tsa.seasonal import STL

from detector.core.timeutil import DAY_S, WEEK_S, seconds
from detector.evaluation.backtest import BacktestSettings, refit_points

# The detector's defaults (SeasonalBaseline, Ensemble, Hysteresis), for direction "both".
BINS, MIN_STRENGTH, CLIP, ACCEPT_POINTS, BAND = 24, 0.2, 3.0, 3, 3.0
SLOW_HALFLIFE, SLOW_ACCEPT_S, HORIZON_S, ENTER, LEAVE = 6 * 3600.0, 2 * 3600.0, DAY_S, 0.95, 0.5
REFRACTORY = 20  # rows after an onset whose repeats are held just below ENTER
WINDOW = 8  # the level-shift family's window, in rows
HALFLIVES = [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
MAD, Q90, WEEK_ORIGIN = 1.4826, 1.6449, 4 * DAY_S


@dataclass
class Track:
    """One level tracker's state."""

    level: float = math.nan
    last_t: float = math.nan
    run_sign: int = 0
    run_start: float = 0.0
    run_sum: float = 0.0
    run_n: int = 0


def _phase(t: float, period: float) -> float:
    return (t - (WEEK_ORIGIN if period == WEEK_S else 0.0)) % period


def _bin(t: float, period: float, width: float) -> int:
    return min(int(_phase(t, period) // width), round(period / width) - 1)


def _lookup(table: list[float], period: float, t: float) -> float:
    """Linear interpolation between bin centres, cyclic: the per-point ``phase_lookup``."""
    n = len(table)
    pos = _phase(t, period) / (period / n) - 0.5
    lower = math.floor(pos)
    frac = pos - lower
    i0 = lower % n
    return table[i0] * (1.0 - frac) + table[(i0 + 1) % n] * frac


def _interp(x: float, xp: list[float], fp: list[float]) -> float:
    """``numpy.interp`` for one point: linear inside ``xp``, the end value outside."""
    k = bisect_right(xp, x)
    if k == 0 or k == len(xp):
        return fp[0] if k == 0 else fp[-1]
    a, b = xp[k - 1], xp[k]
    return fp[k - 1] + (fp[k] - fp[k - 1]) * (x - a) / (b - a)


def _fill(values: list[float | None]) -> list[float]:
    """Linear interpolation over gaps, the nearest value beyond the ends (``interpolate``)."""
    known = [i for i, v in enumerate(values) if v is not None]
    if not known:
        return [0.0] * len(values)
    return [_interp(i, known, [values[k] for k in known]) for i in range(len(values))]  # type: ignore[misc]


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics, as ``numpy.quantile`` does."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    return ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def ewma_before(d: list[float], halflife_points: float) -> list[float]:
    """Exponential moving average of the points before each one (the first sees itself)."""
    a = 1.0 - 2.0 ** (-1.0 / max(halflife_points, 1e-9))
    level, out = d[0], [d[0]]
    for v in d[:-1]:
        level = a * v + (1.0 - a) * level
        out.append(level)
    return out


def best_halflife(d: list[float]) -> float:
    """Half-life, in points, of the smoothing with the least one-step absolute error."""
    d = [v for v in d if math.isfinite(v)]
    if len(d) < 16:
        return float(HALFLIVES[-1])
    errors = []
    for h in HALFLIVES:
        smooth = ewma_before(d, h)
        errors.append(_mean([abs(a - b) for a, b in zip(d[1:], smooth[1:], strict=True)]))
    best = min(errors)
    return float(max(h for h, e in zip(HALFLIVES, errors, strict=True) if e <= 1.01 * best))


def track_step(
    st: Track, t: float, d: float, lim: float, halflife: float, accept_s: float
) -> float:
    """One point of the Huber-clipped level tracker; returns the level the point is judged by."""
    if d != d:  # a missing value leaves the state waiting
        return math.nan
    elapsed = 0.0 if st.last_t != st.last_t else max(t - st.last_t, 0.0)
    st.last_t = t
    if st.level != st.level:
        st.level = d
        return d
    before, r = st.level, d - st.level
    if r > lim or r < -lim:
        sign = 1 if r > 0 else -1
        if sign != st.run_sign:
            st.run_sign, st.run_start, st.run_sum, st.run_n = sign, t, 0.0, 0
        st.run_sum += d
        st.run_n += 1
        if st.run_n >= ACCEPT_POINTS and t - st.run_start >= accept_s:
            st.level = st.run_sum / st.run_n
            st.run_sign, st.run_sum, st.run_n = 0, 0.0, 0
            return before
        r = sign * lim
    elif r * st.run_sign < 0:
        st.run_sign, st.run_sum, st.run_n = 0, 0.0, 0
    st.level += -math.expm1(-math.log(2.0) / halflife * elapsed) * r
    return before


@dataclass
class Signal:
    """Fitted seasonal model of one signal, plus its fast and slow tracker states."""

    profile: list[float]
    period: float
    scale: list[float]
    slow_scale: list[float]
    halflife: float
    fast: Track = field(default_factory=Track)
    slow: Track = field(default_factory=Track)


def fit_signal(t: list[float], x: list[float]) -> Signal:
    """Per-point ``SeasonalBaseline._fit_signal`` (finite points only, transform "none")."""
    if len(x) < 8:
        return Signal([], 0.0, [1.0] * BINS, [1.0] * BINS, DAY_S / BINS)
    step = statistics.median([b - a for a, b in pairwise(t)])
    span = t[-1] - t[0]
    period, profile = 0.0, []
    if step <= DAY_S / 8:
        period = WEEK_S if span >= 2 * WEEK_S else DAY_S if span >= 2 * DAY_S else 0.0
    if period:
        profile = _profile(t, x, step, period)
        period = period if profile else 0.0
    d = [xi - _lookup(profile, period, ti) for ti, xi in zip(t, x, strict=True)] if period else x
    halflife = best_halflife(d) * step
    settle = min(len(x) // 5, 50)
    typical = statistics.median([abs(v) for v in x])
    scales = []
    for hl in (halflife, max(halflife, SLOW_HALFLIFE)):
        resid = [a - b for a, b in zip(d, ewma_before(d, hl / step), strict=True)]
        scales.append(_scales(t[settle:], resid[settle:], typical))
    return Signal(profile, period, scales[0], scales[1], halflife)


def _profile(t: list[float], x: list[float], step: float, period: float) -> list[float]:
    """Coarse STL profile from bin medians, refined by shrunk fine-bin medians of the rest."""
    width = DAY_S / BINS
    groups: dict[int, list[float]] = {}
    for ti, xi in zip(t, x, strict=True):
        groups.setdefault(math.floor(ti / width), []).append(xi)
    keys = list(range(math.floor(t[0] / width), math.floor(t[-1] / width) + 1))
    series = _fill([statistics.median(groups[k]) if k in groups else None for k in keys])
    n_bins = round(period / width)
    jump = max(1, n_bins // 12)
    res = STL(
        np.array(series), period=n_bins, seasonal_jump=jump,
        trend_jump=math.ceil(1.5 * jump), low_pass_jump=jump,
    ).fit()  # fmt: skip
    seasonal, rest, trend = res.seasonal.tolist(), res.resid.tolist(), res.trend.tolist()
    total = statistics.pvariance([a + b for a, b in zip(seasonal, rest, strict=True)])
    power = _mean([v * v for v in series])
    strength = 1.0 - statistics.pvariance(rest) / total if total > 1e-12 * power else 0.0
    by_phase: dict[int, list[float]] = {}
    for k, s in zip(keys, seasonal, strict=True):
        by_phase.setdefault(_bin(k * width, period, width), []).append(s)
    coarse = {b: _mean(v) for b, v in sorted(by_phase.items())}
    cycles = len(keys) / n_bins
    weak = statistics.pvariance(coarse.values()) < 4.0 * statistics.pvariance(rest) / cycles
    if strength < MIN_STRENGTH or weak:
        return []
    base = _fill([coarse.get(b) for b in range(n_bins)])
    centres = [(k + 0.5) * width for k in keys]
    n_fine = max(n_bins, round(period / max(step, 300.0)))
    fine: dict[int, list[float]] = {}
    for ti, xi in zip(t, x, strict=True):
        r = xi - _interp(ti, centres, trend) - _lookup(base, period, ti)
        fine.setdefault(_bin(ti, period, period / n_fine), []).append(r)
    ring = [base[-1], *base, base[0]]
    grid = [(i - 0.5) / n_bins for i in range(n_bins + 2)]
    profile = []
    for b in range(n_fine):
        vals = fine.get(b, [])
        shrunk = statistics.median(vals) * len(vals) / (len(vals) + 10.0) if vals else 0.0
        profile.append(_interp((b + 0.5) / n_fine, grid, ring) + shrunk)
    mean = _mean(profile)
    return [v - mean for v in profile]


def _robust_sigma(ordered: list[float]) -> float:
    return max(MAD * _quantile(ordered, 0.5), _quantile(ordered, 0.9) / Q90)


def _scales(t: list[float], resid: list[float], typical: float) -> list[float]:
    """Per time-of-day robust scales, shrunk towards the overall one and floored."""
    pairs = [(ti, r) for ti, r in zip(t, resid, strict=True) if math.isfinite(r)]
    floor = 1e-6 * max(1.0, typical)
    if not pairs:
        return [floor] * BINS
    centre = statistics.median([r for _, r in pairs])
    dev = [abs(r - centre) for _, r in pairs]
    overall = _robust_sigma(sorted(dev))
    floor = max(floor, 0.5 * 1.2533 * _mean(dev), 0.25 * overall)
    overall = max(overall, floor)
    per: dict[int, list[float]] = {}
    for (ti, _), dv in zip(pairs, dev, strict=True):
        per.setdefault(_bin(ti, DAY_S, DAY_S / BINS), []).append(dv)
    out = []
    for b in range(BINS):
        n = len(per.get(b, []))
        scale = _robust_sigma(sorted(per[b])) if n else overall
        out.append(max((n * scale + 30.0 * overall) / (n + 30.0), floor))
    return out


def decompose(sig: Signal, t: float, x: float) -> tuple[float, float, float, float]:
    """Fast-tracker residual, and the slow tracker's expected value and band, of one point."""
    season = _lookup(sig.profile, sig.period, t) if sig.period else 0.0
    d = x - season
    s = _lookup(sig.scale, DAY_S, t)
    z = (d - track_step(sig.fast, t, d, CLIP * s, sig.halflife, 0.0)) / s
    s = _lookup(sig.slow_scale, DAY_S, t)
    hl = max(sig.halflife, SLOW_HALFLIFE)
    centre = track_step(sig.slow, t, d, CLIP * s, hl, SLOW_ACCEPT_S) + season
    return z, centre, centre - BAND * s, centre + BAND * s


def fit_baseline(t: list[float], x: list[float]) -> tuple[Signal, list[float]]:
    """Per-point ``SeasonalBaseline().fit``: the model, then its own training residuals."""
    ok = [(ti, v) for ti, v in zip(t, x, strict=True) if math.isfinite(v)]
    sig = fit_signal([a for a, _ in ok], [b for _, b in ok])
    return sig, [decompose(sig, ti, v)[0] for ti, v in zip(t, x, strict=True)]


def _score(z: float) -> float:
    """Raw score for direction "both": |z|, with missing and infinite values scoring 0."""
    a = abs(z)
    return 0.0 if a != a or a == math.inf else a


class Calibrator:
    """Per-point ``TailCalibrator``: empirical body, exponential tail, ``exp(-p * horizon)``."""

    def __init__(self, scores: list[float], horizon: float) -> None:
        s = sorted(v for v in scores if math.isfinite(v)) or [0.0]
        n = len(s)
        u = _quantile(s, max(min(0.98, 1.0 - 10 / n), 0.0))
        excess = [v - u for v in s if v > u]
        beta = statistics.median(excess) / math.log(2.0) if excess else 0.0
        self.beta = max(beta, 1e-6 * (1.0 + abs(u)))
        self.u, self.p_u = u, sum(1 for v in s if v >= u) / n
        self.sorted, self.horizon = s, horizon

    def __call__(self, x: float) -> float:
        x = 0.0 if x != x else x
        n = len(self.sorted)
        surv = (n - bisect_left(self.sorted, x) + 1.0) / (n + 1.0)
        if x > self.u:
            surv = min(self.p_u * math.exp(-(x - self.u) / self.beta), surv)
        return math.exp(-surv * self.horizon)


class LevelShift:
    """Per-point ``LevelShiftDetector``: the last ``WINDOW`` residuals' sum over root count."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def __call__(self, z: float) -> float:
        self.recent.append(z)
        present = [v for v in self.recent if math.isfinite(v)]
        return _score(sum(present) / math.sqrt(len(present))) if present else 0.0


def _decide(state: list[int], score: float) -> int:
    """One point of the hysteresis (``min_points`` 1): ``state`` is ``[decision, count]``."""
    flip = score < LEAVE if state[0] else score >= ENTER
    if flip:
        state[0] = 1 - state[0]
    return state[0]


class Ensemble:
    """Per-point ``detector.Ensemble()`` with its defaults: fit on rows, then ``step``."""

    def __init__(self, t: list[float], rows: list[list[float]]) -> None:
        n_sig = len(rows[0])
        self.signals, self.shifts = [], [LevelShift() for _ in range(n_sig)]
        train: list[list[float]] = []
        shift_train: list[list[float]] = []
        for j in range(n_sig):
            sig, z = fit_baseline(t, [r[j] for r in rows])
            self.signals.append(sig)
            train.append([_score(v) for v in z])
            shift_train.append([self.shifts[j](v) for v in z])
        step = statistics.median([b - a for a, b in pairwise(t)]) if len(t) > 1 else 1.0
        horizon = max(HORIZON_S / max(step, 1e-3), 1.0) * 2 * n_sig  # two families per signal
        # The tracker's first rows have no history yet; their scores would inflate the tails.
        skip = min(len(t) // 5, 50)
        self.cal = [Calibrator(scores[skip:], horizon) for scores in train]
        self.shift_cal = [Calibrator(scores[skip:], horizon) for scores in shift_train]
        self.hyst = [[0, 0] for _ in range(n_sig + 1)]  # per signal, then overall
        self.since = [REFRACTORY + 1] * n_sig  # rows since each signal's last onset

    def step(self, t: float, row: list[float]) -> tuple[float, int, list[float], list]:
        """Overall score and decision, per-signal scores and (expected, lower, upper)."""
        per, bands = [], []
        for j, x in enumerate(row):
            z, expected, lower, upper = decompose(self.signals[j], t, x)
            per.append(max(self.cal[j](_score(z)), self.shift_cal[j](self.shifts[j](z))))
            bands.append((expected, lower, upper))
        for h, s in zip(self.hyst, per, strict=False):
            _decide(h, s)
        decision = _decide(self.hyst[-1], max(per))
        for j, s in enumerate(per):
            self.since[j] = min(self.since[j] + 1, REFRACTORY + 1)
            if s >= ENTER:
                if self.since[j] <= REFRACTORY:
                    per[j] = math.nextafter(ENTER, -math.inf)
                else:
                    self.since[j] = 0
        return max(per), decision, per, bands


def backtest(frame: pd.DataFrame, settings: BacktestSettings | None = None) -> pd.DataFrame:
    """Per-point ``detector.evaluation.backtest`` with default parameters: same refits, columns."""
    settings = settings or BacktestSettings()
    frame = frame.astype("float64").replace([np.inf, -np.inf], np.nan).sort_index(kind="stable")
    t = seconds(frame.index).tolist()
    rows = frame.to_numpy().tolist()
    out = [[0.0] * (2 + frame.shape[1]) for _ in rows]
    points = refit_points(np.array(t), settings)  # the schedule is not per-point work: reused
    model: Ensemble | None = None
    for k, start in enumerate(points):
        stop = points[k + 1] if k + 1 < len(points) else len(rows)
        first = bisect_left(t, t[start] - settings.training_window)
        fresh = Ensemble(t[first:start], rows[first:start])
        if model is not None:
            fresh.hyst = [list(h) for h in model.hyst]
            fresh.since = list(model.since)
        model = fresh
        for i in range(start, stop):
            score, on, per, _ = model.step(t[i], rows[i])
            out[i] = [score, on, *per]
    columns = ["anomaly_score", "anomalous", *(f"{s}_score" for s in frame.columns)]
    result = pd.DataFrame(out, index=frame.index, columns=columns)
    result["anomalous"] = result["anomalous"].astype(np.int8)
    return result
