"""Load-aware expectations: what a latency-like signal should be at the load the server has now.

A time-of-day baseline expects the latency of a typical Tuesday 14:00; a traffic surge then reads
as a latency regression, and a regression at unusually low load (where latency should have
fallen) hides inside the band. Here each latency-like signal gets a *load factor* learned on the
training window,

    latency = a + sum_k (b_k * s_k + c_k * s_k**2),   s_k = load_k / scale_k,   a, b, c >= 0,

fitted for relative error (latency noise is multiplicative), and the factor of a row is its
curve's value over the curve's value at the training window's median load,

over its load covariates (request rate, prompt and output tokens per request), and the baseline
models ``latency / factor`` (the latency the typical load would have given) instead of the
latency; its expectation and band are multiplied back by the factor of the row. So the expected
value is "expected at this load", a rise the load explains stays inside the band, and a rise at
the same or a lower load does not.

Why this form:

- *Levels, not residuals.* The coefficients are fitted on the values over the whole window,
  nights and afternoons, because that is where the load varies: after the seasonal profile is
  taken out, what is left of the load is counting noise, which explains nothing.
- *Non-negative and quadratic, in latency itself.* Queueing makes latency grow with load faster
  than linearly, and a surge goes beyond anything training saw: a convex, non-decreasing curve
  extrapolates upward, so a surge is explained rather than paged; a fitted curve free to bend
  down would predict faster service at twice the load. The same curve in log latency would grow
  like ``exp(s**2)`` beyond the data, expecting ten times the latency at three times the load,
  and so hide any regression during a surge. ``s`` is capped at :data:`MAX_LOAD` training
  scales and the factor at :data:`MAX_FACTOR`, so absurd covariates cannot produce absurd
  expectations.
- *Exogenous load only.* Requests running and waiting rise in a regression too (Little's law: at
  the same arrival rate, slower service means more requests in flight), so using them would let a
  regression explain itself away; :func:`auto_explained_by` never picks them.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> rate = rng.uniform(1.0, 20.0, 3000)
>>> latency = 2.0 * (1.0 + 0.002 * rate**2) * np.exp(0.03 * rng.standard_normal(3000))
>>> model = LoadModel().fit(latency[:, None], rate[:, None], np.ones((1, 1), dtype=bool))
>>> f = model.factor(np.array([[10.0], [40.0]]))[:, 0]
>>> bool(f[1] / f[0] > 1.8)  # four times the load: the expectation rises with it
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from detector.core.signal_roles import auto_explained_by, is_latency_like

__all__ = [
    "MAX_FACTOR",
    "MAX_LOAD",
    "LoadAdjustment",
    "LoadEffect",
    "LoadModel",
    "auto_explained_by",
    "check_explained_by",
    "is_latency_like",
]

# The load covariate is capped at this many training scales (its 99th percentile).
MAX_LOAD = 10.0
# The factor stays within [1 / MAX_FACTOR, MAX_FACTOR] of the typical load's.
MAX_FACTOR = 20.0
_MIN_ROWS = 50
_MAX_FIT_ROWS = 20_000
# The least change of the expected latency, from the window's quietest to its busiest load (5th
# to 95th percentile), for a signal to be expected at its load.
_MIN_EFFECT = 0.03
# Rows further than this many robust deviations from the first fit are left out of the second.
_TRIM = 4.0


def check_explained_by(explained_by: object) -> None:
    """Raise ``ValueError`` unless ``explained_by`` is ``"auto"``, None or a mapping of names to
    sequences of names."""
    if explained_by is None or explained_by == "auto":
        return
    if not isinstance(explained_by, Mapping):
        raise ValueError(f"explained_by={explained_by!r} must be 'auto' or a mapping")
    for target, covariates in explained_by.items():
        if isinstance(covariates, str) or not all(isinstance(c, str) for c in covariates):
            raise ValueError(f"explained_by[{target!r}] must be a list of signal names")
        if target in covariates:
            raise ValueError(f"explained_by[{target!r}] names the signal itself")


def _features(cov: np.ndarray, scale: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``[s, s**2]`` per covariate (rows, 2 * covariates); missing load counts as typical."""
    s = np.where(np.isfinite(cov), cov, fill) / scale
    s = np.clip(s, 0.0, MAX_LOAD)
    return np.concatenate([s, s * s], axis=1)


class LoadModel:
    """The load factor of some target columns, each over its own subset of load covariates.

    ``fit(targets, covariates, uses)``: ``targets`` (rows, k) positive latency-like values,
    ``covariates`` (rows, c) load values, ``uses`` (k, c) which covariates explain which
    target. :meth:`factor` gives (rows, k) multipliers, 1 at the training window's typical
    load; a target whose load explained nothing (or that had too few rows) keeps factor 1.
    """

    def fit(
        self,
        targets: np.ndarray,
        covariates: np.ndarray,
        uses: np.ndarray,
        additive: np.ndarray | None = None,
    ) -> LoadModel:
        """Fit every target's coefficients (see the module docstring); ``additive`` marks the
        targets whose load adds to them rather than multiplies them (a share of a capacity)."""
        cov = np.asarray(covariates, dtype=np.float64)
        self.uses_ = np.asarray(uses, dtype=bool)
        k, c = self.uses_.shape
        finite = np.where(np.isfinite(cov) & (cov >= 0), cov, np.nan)
        with np.errstate(all="ignore"):
            self.scale_ = np.nanquantile(finite, 0.99, axis=0) if cov.shape[0] else np.ones(c)
            self.fill_ = np.nanmedian(finite, axis=0) if cov.shape[0] else np.zeros(c)
        bad = ~np.isfinite(self.scale_) | (self.scale_ <= 0)
        self.scale_ = np.where(bad, 1.0, self.scale_)
        self.fill_ = np.where(np.isfinite(self.fill_), self.fill_, 0.0)
        self.uses_[:, bad] = False
        feats = _features(cov, self.scale_, self.fill_)
        # The typical load's features: the factor is 1 there.
        self.centre_ = _features(self.fill_[None, :], self.scale_, self.fill_)[0]
        self.coef_ = np.zeros((k, 2 * c))
        self.intercept_ = np.ones(k)
        self.additive_ = np.zeros(k, dtype=bool) if additive is None else np.asarray(additive)
        y_all = np.asarray(targets, dtype=np.float64)
        for j in range(k):
            cols = np.flatnonzero(np.tile(self.uses_[j], 2))
            if not cols.size:
                continue
            y = y_all[:, j]
            intercept, coef = _fit_one(y, feats[:, cols], relative=not self.additive_[j])
            curve = intercept + feats[:, cols] @ coef
            low, high = np.quantile(curve, [0.05, 0.95]) if curve.size else (1.0, 1.0)
            # A load that moves the expectation by less than this over the training window
            # explains nothing worth saying so: time of day only.
            ok = np.isfinite(y)
            typical = float(np.median(np.abs(y[ok]))) if ok.any() else 0.0
            floor = _MIN_EFFECT * (typical if self.additive_[j] else low)
            if high - low > floor:
                self.intercept_[j], self.coef_[j, cols] = intercept, coef
        return self

    def factor(self, covariates: np.ndarray) -> np.ndarray:
        """Multiplier per row and target: expected latency at this load over that at typical."""
        curve, typical = self._curves(covariates)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(typical > 0, curve / typical, 1.0)
        return np.clip(f, 1.0 / MAX_FACTOR, MAX_FACTOR)

    def shift(self, covariates: np.ndarray) -> np.ndarray:
        """What the load adds per row and target against the typical load (additive ones)."""
        curve, typical = self._curves(covariates)
        return curve - typical

    def _curves(self, covariates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = _features(np.asarray(covariates, dtype=np.float64), self.scale_, self.fill_)
        curve = self.intercept_ + feats @ self.coef_.T
        return curve, self.intercept_ + self.centre_ @ self.coef_.T

    @property
    def explains(self) -> np.ndarray:
        """Which targets got a load dependence (some coefficient above 0)."""
        return (self.coef_ > 0).any(axis=1)


def _fit_one(y: np.ndarray, x: np.ndarray, *, relative: bool) -> tuple[float, np.ndarray]:
    """Intercept and slopes, all non-negative, for relative (or absolute) error; once more
    without outliers."""
    ok = np.isfinite(y) & ((y > 0) if relative else (y >= 0))
    if ok.sum() < _MIN_ROWS:
        return 1.0, np.zeros(x.shape[1])
    rows = np.flatnonzero(ok)
    if rows.size > _MAX_FIT_ROWS:
        # Evenly spaced, so the fit is the same every time on the same window.
        rows = rows[np.linspace(0, rows.size - 1, _MAX_FIT_ROWS).astype(int)]
    # Relative: each row divided by its value, least squares of (curve / y - 1).
    weight = y[rows] if relative else np.ones(rows.size)
    design = np.hstack([np.ones((rows.size, 1)), x[rows]]) / weight[:, None]
    target = y[rows] / weight
    coef = np.zeros(design.shape[1])
    keep = np.ones(rows.size, dtype=bool)
    for _ in range(2):
        coef, _ = nnls(design[keep], target[keep])
        resid = design @ coef - target
        mad = 1.4826 * np.median(np.abs(resid - np.median(resid)))
        if not mad > 0:
            break
        keep = np.abs(resid - np.median(resid)) <= _TRIM * mad
        if keep.sum() < _MIN_ROWS:
            break
    if relative and not coef[0] > 0:
        # No latency at zero load is no curve to divide by: time of day only.
        return 1.0, np.zeros(x.shape[1])
    return float(coef[0]), coef[1:]


@dataclass(frozen=True)
class LoadEffect:
    """Per row and column: the value at typical load is ``(value - shift) / ratio``, and the
    expectation at the row's load ``ratio * expected + shift``; ``factor`` is the expectation at
    this load over that at typical load, whichever way the load acts (what people are shown)."""

    ratio: np.ndarray
    shift: np.ndarray
    factor: np.ndarray

    def to_typical(self, values: np.ndarray) -> np.ndarray:
        """Values as they would have been at the typical load."""
        return (values - self.shift) / self.ratio

    def at_load(self, values: np.ndarray) -> np.ndarray:
        """Expectations at typical load moved to the load of each row."""
        return values * self.ratio + self.shift


class LoadAdjustment:
    """The load model of a frame's signals: which columns it explains, by which covariates.

    Covariates are read from a separate frame when given (the service fetches them from other
    signals), else from the frame itself (a backtest has every signal in one frame).
    ``explained_by`` is ``"auto"`` (:func:`auto_explained_by` on the column names), None (no
    load model) or a mapping target -> covariate names, where the target ``"*"`` stands for
    every column. ``mode`` says how the load acts: ``"ratio"`` multiplies (latencies: their
    noise grows with them), ``"shift"`` adds (a KV cache's use: what each request in flight
    holds), ``"auto"`` multiplies latency-like columns and adds to the others.
    """

    def fit(
        self,
        frame: pd.DataFrame,
        covariates: pd.DataFrame | None,
        explained_by: Mapping[str, Sequence[str]] | str | None,
        exclude: np.ndarray,
        mode: str = "auto",
    ) -> LoadAdjustment:
        """Fit the load effects on ``frame``'s columns (except those ``exclude`` marks)."""
        check_explained_by(explained_by)
        names = [str(c) for c in frame.columns]
        available = names + ([str(c) for c in covariates.columns] if covariates is not None else [])
        if explained_by == "auto":
            mapping: Mapping[str, Sequence[str]] = auto_explained_by(dict.fromkeys(available))
        else:
            mapping = explained_by or {}
        wanted = {
            j: tuple(c for c in mapping.get(name, mapping.get("*", ())) if c != name)
            for j, name in enumerate(names)
            if not exclude[j]
        }
        wanted = {j: covs for j, covs in wanted.items() if covs}
        self.targets_ = np.array(sorted(wanted), dtype=np.int64)
        self.covariates_ = list(dict.fromkeys(c for covs in wanted.values() for c in covs))
        uses = np.array(
            [[c in wanted[j] for c in self.covariates_] for j in self.targets_], dtype=bool
        ).reshape(len(self.targets_), len(self.covariates_))
        cov = self._covariate_values(frame, covariates)
        values = frame.to_numpy(np.float64)[:, self.targets_]
        additive = np.array(
            [mode == "shift" or (mode == "auto" and not is_latency_like(names[j]))
             for j in self.targets_],
            dtype=bool,
        )  # fmt: skip
        self.model_ = LoadModel().fit(values, cov, uses, additive)
        return self

    def _covariate_values(self, frame: pd.DataFrame, covariates: pd.DataFrame | None) -> np.ndarray:
        out = np.full((frame.shape[0], len(self.covariates_)), np.nan)
        for k, name in enumerate(self.covariates_):
            if covariates is not None and name in covariates.columns:
                out[:, k] = covariates[name].reindex(frame.index).to_numpy(np.float64)
            elif name in frame.columns:
                out[:, k] = frame[name].to_numpy(np.float64)
        return out

    def effects(self, frame: pd.DataFrame, covariates: pd.DataFrame | None) -> LoadEffect | None:
        """What the load of each row does to each column's expectation; None when no column
        has a load model."""
        if not self.targets_.size:
            return None
        cov = self._covariate_values(frame, covariates)
        factor, shift = self.model_.factor(cov), self.model_.shift(cov)
        add = getattr(self.model_, "additive_", np.zeros(self.targets_.size, dtype=bool))
        ratio, offset, shown = np.ones(frame.shape), np.zeros(frame.shape), np.ones(frame.shape)
        ratio[:, self.targets_] = np.where(add, 1.0, factor)
        offset[:, self.targets_] = np.where(add, shift, 0.0)
        shown[:, self.targets_] = factor
        return LoadEffect(ratio, offset, shown)

    def explained(self, columns: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Columns whose expectation depends on load, with the covariates it depends on."""
        if not self.targets_.size:
            return {}
        out = {}
        explains = self.model_.explains  # computed over every target: once, not per target
        for row, j in enumerate(self.targets_):
            if explains[row]:
                used = self.model_.uses_[row] & (self.model_.coef_[row].reshape(2, -1) > 0).any(0)
                out[str(columns[j])] = tuple(np.asarray(self.covariates_)[used].tolist())
        return out
