"""Naive reference: the default ensemble written the obvious way, one point at a time in Python.

This is the yardstick ``bench/run.py`` compares against. It follows the same mathematics as
``detector`` (SeasonalBaseline, LevelShiftDetector, IsolationForestDetector, TailCalibrator,
Hysteresis, the causal backtest) but loops over points with plain floats, lists, dicts and
``statistics.median`` instead of arrays. Two pieces are deliberately *not* rewritten, because a
hand-written version would be a different algorithm rather than a slower one: STL is still
statsmodels' (it only ever sees the short series of bin medians) and the isolation forest is still
grown by scikit-learn; only its scoring is re-done by walking the trees per point.
"""

from __future__ import annotations

import math
import statistics
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from statsmodels.tsa.seasonal import STL

from detector.backtest import BacktestSettings, refit_points
from detector.timeutil import DAY_S, WEEK_S, seconds

_MAD = 1.4826
_SHRINK = 30.0
_WEEK_ORIGIN = 4 * DAY_S


@dataclass(frozen=True)
class Params:
    """The defaults of ``Ensemble`` / ``SeasonalBaseline`` (direction "both" for every signal)."""

    bins: int = 24
    min_strength: float = 0.2
    halflife: float = 3 * 3600.0
    clip: float = 3.0
    accept_after: float = 3600.0
    band: float = 3.0
    window: int = 8
    horizon: float = DAY_S
    enter: float = 0.9
    leave: float = 0.5
    min_points: int = 2
    seed: int = 0


def _phase(t: float, period: float) -> float:
    return (t - (_WEEK_ORIGIN if period == WEEK_S else 0.0)) % period


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


def _fill(values: list[float | None]) -> list[float]:
    """Linear interpolation over interior gaps (pandas ``interpolate``); the ends are known here."""
    out, last = list(values), 0
    for i, v in enumerate(values):
        if v is not None:
            for k in range(last + 1, i):
                out[k] = out[last] + (v - out[last]) * (k - last) / (i - last)  # type: ignore[operator]
            last = i
    return out  # type: ignore[return-value]


def _score(z: float) -> float:
    """Raw score for direction "both" (the default, and the only one the benchmark uses)."""
    a = abs(z)
    return 0.0 if a != a or a == math.inf else a


@dataclass
class Track:
    """Level-tracker state of one signal (the same fields as the detector's)."""

    level: float = math.nan
    last_t: float = math.nan
    run_sign: int = 0
    run_start: float = 0.0
    run_sum: float = 0.0
    run_n: int = 0


def track_step(st: Track, t: float, d: float, lim: float, p: Params) -> float:
    """One point of the Huber-clipped level tracker; returns the level the point is judged by."""
    if d != d:
        return math.nan
    if st.level != st.level:
        st.level, st.last_t = d, t
        return d
    before = st.level
    r = d - st.level
    if r > lim or r < -lim:
        sign = 1 if r > 0 else -1
        if sign != st.run_sign:
            st.run_sign, st.run_start, st.run_sum, st.run_n = sign, t, 0.0, 0
        st.run_sum += d
        st.run_n += 1
        if t - st.run_start >= p.accept_after and st.run_n >= 3:
            st.level, st.last_t = st.run_sum / st.run_n, t
            st.run_sign, st.run_sum, st.run_n = 0, 0.0, 0
            return before
        r = sign * lim
    elif r * st.run_sign < 0:
        st.run_sign, st.run_sum, st.run_n = 0, 0.0, 0
    decay = -math.log(2.0) / p.halflife
    st.level += (1.0 - math.exp(decay * max(t - st.last_t, 0.0))) * r
    st.last_t = t
    return before


@dataclass
class Signal:
    """Fitted seasonal model of one signal, plus its streaming state."""

    profile: list[float]
    period: float
    scale: list[float]
    offset: float
    track: Track = field(default_factory=Track)

    def forward(self, v: float) -> float:
        return v if self.offset != self.offset else math.log(max(v + self.offset, 1e-300))

    def backward(self, y: float) -> float:
        return y if self.offset != self.offset else math.exp(min(y, 700.0)) - self.offset


def fit_signal(t: list[float], raw: list[float], p: Params) -> Signal:
    """Per-point version of ``SeasonalBaseline._fit_signal`` (finite points only)."""
    positive = [v for v in raw if v > 0]
    offset = math.nan if not positive or min(raw) < 0 else 0.05 * statistics.median(positive)
    sig = Signal([], 0.0, [1.0] * p.bins, offset)
    x = [sig.forward(v) for v in raw]
    if len(x) < 8:
        return sig
    width = DAY_S / p.bins
    step = statistics.median([b - a for a, b in pairwise(t)])
    span = t[-1] - t[0]
    period = 0.0
    if step <= DAY_S / 8:
        period = WEEK_S if span >= 2 * WEEK_S else DAY_S if span >= 2 * DAY_S else 0.0
    if period:
        sig.profile = _profile(t, x, width, period, p)
        sig.period = period if sig.profile else 0.0
    track, resid = Track(), []
    for ti, xi in zip(t, x, strict=True):
        d = xi - (_lookup(sig.profile, period, ti) if sig.period else 0.0)
        resid.append(d - track_step(track, ti, d, math.inf, p))
    settle = min(len(resid) // 5, 50)
    typical = statistics.median([abs(v) for v in x])
    sig.scale = _scales(t[settle:], resid[settle:], p.bins, typical)
    return sig


def _profile(t: list[float], x: list[float], width: float, period: float, p: Params) -> list[float]:
    groups: dict[int, list[float]] = {}
    for ti, xi in zip(t, x, strict=True):
        groups.setdefault(math.floor(ti / width), []).append(xi)
    first, last = math.floor(t[0] / width), math.floor(t[-1] / width)
    keys = range(first, last + 1)
    series = _fill([statistics.median(groups[k]) if k in groups else None for k in keys])
    n_bins = round(period / width)
    res = STL(np.array(series), period=n_bins).fit()  # the one library call kept (see above)
    seasonal, remainder = res.seasonal.tolist(), res.resid.tolist()
    both = [a + b for a, b in zip(seasonal, remainder, strict=True)]
    denom = statistics.pvariance(both)
    strength = 1.0 - statistics.pvariance(remainder) / denom if denom > 0 else 0.0
    if strength < p.min_strength:
        return []
    sums: dict[int, list[float]] = {}
    for k, s in zip(keys, seasonal, strict=True):
        sums.setdefault(_bin(k * width, period, width), []).append(s)
    prof = _fill([sum(sums[b]) / len(sums[b]) if b in sums else None for b in range(n_bins)])
    mean = sum(prof) / len(prof)
    return [v - mean for v in prof]


def _scales(t: list[float], resid: list[float], bins: int, typical: float) -> list[float]:
    pairs = [(ti, r) for ti, r in zip(t, resid, strict=True) if math.isfinite(r)]
    floor = 1e-6 * max(1.0, typical)
    if not pairs:
        return [floor] * bins
    centre = statistics.median([r for _, r in pairs])
    dev = [abs(r - centre) for _, r in pairs]
    overall = _MAD * statistics.median(dev)
    floor = max(floor, 1.2533 * (sum(dev) / len(dev)) * 0.5, 0.25 * overall)
    overall = max(overall, floor)
    per: dict[int, list[float]] = {}
    for (ti, _), dv in zip(pairs, dev, strict=True):
        per.setdefault(_bin(ti, DAY_S, DAY_S / bins), []).append(dv)
    out = []
    for b in range(bins):
        n = len(per.get(b, []))
        scale = _MAD * statistics.median(per[b]) if n else overall
        out.append(max((n * scale + _SHRINK * overall) / (n + _SHRINK), floor))
    return out


def decompose(sig: Signal, t: float, v: float, p: Params) -> tuple[float, float, float, float]:
    """Signed standardised residual, expected value and band of one point; advances the level."""
    x = sig.forward(v)
    season = _lookup(sig.profile, sig.period, t) if sig.period else 0.0
    s = _lookup(sig.scale, DAY_S, t)
    centre = track_step(sig.track, t, x - season, p.clip * s, p) + season
    lo, hi = sig.backward(centre - p.band * s), sig.backward(centre + p.band * s)
    return (x - centre) / s, sig.backward(centre), lo, hi


class Calibrator:
    """Per-point ``TailCalibrator``: empirical body, exponential tail, ``exp(-p * horizon)``."""

    def __init__(self, scores: list[float], horizon: float) -> None:
        s = sorted(v for v in scores if math.isfinite(v)) or [0.0]
        n = len(s)
        q = max(min(0.98, 1.0 - 10 / n), 0.0)
        pos = q * (n - 1)
        lo = math.floor(pos)
        u = s[lo] + (s[min(lo + 1, n - 1)] - s[lo]) * (pos - lo)
        excess = [v - u for v in s if v > u]
        self.beta = max(sum(excess) / len(excess) if excess else 0.0, 1e-6 * (1.0 + abs(u)))
        self.u, self.p_u = u, sum(1 for v in s if v >= u) / n
        self.sorted, self.horizon = s, horizon

    def __call__(self, x: float) -> float:
        x = 0.0 if x != x else x
        n = len(self.sorted)
        surv = (n - bisect_left(self.sorted, x) + 1.0) / (n + 1.0)
        if x > self.u:
            surv = min(self.p_u * math.exp(-(x - self.u) / self.beta), surv)
        return math.exp(-surv * self.horizon)


def _c(n: float) -> float:
    """Average path length of an unsuccessful search in a tree of ``n`` points."""
    if n <= 2:
        return max(n - 1.0, 0.0)
    return 2 * (math.log(n - 1) + np.euler_gamma) - 2 * (n - 1) / n


class Forest:
    """A scikit-learn isolation forest, scored by walking its trees one point at a time."""

    def __init__(self, rows: list[list[float]], p: Params) -> None:
        data = np.array(rows)
        if data.shape[0] > 20_000:  # the detector's max_train, with the same random subset
            pick = np.random.default_rng(p.seed).choice(data.shape[0], size=20_000, replace=False)
            data = data[pick]
        forest = IsolationForest(
            n_estimators=100, max_samples=min(256, data.shape[0]), random_state=p.seed
        ).fit(data)
        self.trees = []
        for est, feats in zip(forest.estimators_, forest.estimators_features_, strict=True):
            tree, cols = est.tree_, feats.tolist()
            feature = [cols[i] if i >= 0 else -1 for i in tree.feature.tolist()]
            c = [_c(n) for n in tree.n_node_samples.tolist()]
            left, right = tree.children_left.tolist(), tree.children_right.tolist()
            self.trees.append((left, right, feature, tree.threshold.tolist(), c))
        self.denom = len(self.trees) * _c(forest.max_samples_)

    def __call__(self, row: list[float]) -> float:
        x = array("f", row)  # scikit-learn compares float32 features with the thresholds
        depth = 0.0
        for left, right, feature, threshold, c in self.trees:
            node, edges = 0, 0
            while left[node] != -1:
                node = left[node] if x[feature[node]] <= threshold[node] else right[node]
                edges += 1
            depth += edges + c[node]
        return 2.0 ** (-depth / self.denom) if self.denom else 1.0


def _mean_finite(values: deque[float]) -> float:
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else 0.0


def _decide(state: list[int], score: float, p: Params) -> int:
    """One point of the hysteresis: ``state`` is ``[decision, rows the flip has held]``."""
    on, count = state
    flip = score < p.leave if on else score >= p.enter
    count = count + 1 if flip else 0
    if count >= p.min_points:
        on, count = 1 - on, 0
    state[0], state[1] = on, count
    return on


class Ensemble:
    """Per-point ``detector.Ensemble`` with the default families: fit on rows, then ``step``."""

    def __init__(self, t: list[float], rows: list[list[float]], p: Params | None = None) -> None:
        self.p = p = p or Params()
        n_sig = len(rows[0])
        self.signals = []
        for j in range(n_sig):
            pts = [(ti, r[j]) for ti, r in zip(t, rows, strict=True) if math.isfinite(r[j])]
            self.signals.append(fit_signal([a for a, _ in pts], [b for _, b in pts], p))
        self.ls = [deque(maxlen=p.window) for _ in range(n_sig)]
        self.fw = [deque(maxlen=p.window) for _ in range(n_sig)]
        # The training rows are scored by the fitted model itself; their scores calibrate it.
        train = [self._raw(ti, row)[:3] for ti, row in zip(t, rows, strict=True)]
        self.forest = Forest([feats for _, _, feats in train], p)
        step = statistics.median([b - a for a, b in pairwise(t)]) if len(t) > 1 else 1.0
        horizon = max(p.horizon / max(step, 1e-3), 1.0) * (2 * n_sig + 1)
        skip = min(len(t) // 5, 50)
        kept = train[skip:]
        self.cal_s = [Calibrator([r[0][j] for r in kept], horizon) for j in range(n_sig)]
        self.cal_l = [Calibrator([r[1][j] for r in kept], horizon) for j in range(n_sig)]
        self.cal_j = Calibrator([self.forest(r[2]) for r in kept], horizon)
        self.hyst = [[0, 0] for _ in range(n_sig + 1)]  # per signal, then overall

    def _raw(self, t: float, row: list[float]) -> tuple[list, list, list, list]:
        """Raw seasonal and level-shift scores, forest features and the band of one row."""
        p, root = self.p, math.sqrt(self.p.window)
        seas, shift, feats, band = [], [], [], []
        for sig, v, ls, fw in zip(self.signals, row, self.ls, self.fw, strict=True):
            z, expected, lo, hi = decompose(sig, t, v, p)
            band.append((expected, lo, hi))
            seas.append(_score(z))
            ls.append(z)
            shift.append(_score(_mean_finite(ls) * root))
            fw.append(z)  # direction "both": the forest sees the residual unclipped
            now, mean = (0.0 if z != z else z), _mean_finite(fw)
            feats += [now, mean, now - mean]
        return seas, shift, feats, band

    def step(self, t: float, row: list[float]) -> tuple[float, int, list[float], list[int]]:
        """Overall score and decision, per-signal scores and decisions of the next row."""
        seas, shift, feats, _ = self._raw(t, row)
        per = [
            max(cs(a), cl(b))
            for a, b, cs, cl in zip(seas, shift, self.cal_s, self.cal_l, strict=True)
        ]
        overall = max([*per, self.cal_j(self.forest(feats))])
        flags = [_decide(h, s, self.p) for h, s in zip(self.hyst, per, strict=False)]
        return overall, _decide(self.hyst[-1], overall, self.p), per, flags


def backtest(frame: pd.DataFrame, settings: BacktestSettings | None = None) -> pd.DataFrame:
    """Per-point ``detector.backtest`` with default parameters: same refits, same columns."""
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
        model = fresh
        for i in range(start, stop):
            score, on, per, _ = model.step(t[i], rows[i])
            out[i] = [score, on, *per]
    columns = ["anomaly_score", "anomalous", *(f"{s}_score" for s in frame.columns)]
    result = pd.DataFrame(out, index=frame.index, columns=columns)
    result["anomalous"] = result["anomalous"].astype(np.int8)
    return result


def fit_baseline(t: list[float], raw: list[float], p: Params | None = None) -> tuple[Signal, list]:
    """Per-point ``SeasonalBaseline().fit``: the model, then its own training residuals."""
    p = p or Params()
    ok = [(ti, v) for ti, v in zip(t, raw, strict=True) if math.isfinite(v)]
    sig = fit_signal([a for a, _ in ok], [b for _, b in ok], p)
    return sig, [decompose(sig, ti, v, p)[0] for ti, v in zip(t, raw, strict=True)]
