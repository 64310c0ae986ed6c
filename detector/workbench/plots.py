"""Matplotlib figures for the notebooks: decomposition, actual vs expected, score distributions.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
no display needed), with titles, units and a time axis in local time (or the ``tz`` given), and
writes it as PNG when ``save`` names a file.

Examples
--------
>>> idx = pd.date_range("2026-01-05", periods=3 * 288, freq="5min")
>>> frame = pd.DataFrame({"rps": 10 + np.sin(np.arange(idx.size) * 2 * np.pi / 288)}, index=idx)
>>> model = SeasonalBaseline().fit(frame)
>>> fig = plot_decomposition(frame, model, "rps", unit="req/s", tz="UTC")
>>> [ax.get_title() for ax in fig.axes]
['rps: observed and trend', 'rps: daily profile', 'rps: residual']
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from datetime import tzinfo
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detector.core.families.seasonal import SeasonalBaseline
from detector.core.timeutil import WEEK_S, phase_lookup, seconds
from detector.workbench.plot_common import (
    ANOMALY_COLOR,
    BAND_COLOR,
    STYLE,
    axis_label,
    draw_dense,
    finish,
    legend_outside,
    local_times,
    save_png,
    time_axis,
    time_zone,
    zone_name,
)

__all__ = [
    "plot_actual_vs_expected",
    "plot_decomposition",
    "plot_ensemble_scores",
    "plot_score_distributions",
    "save_png",
]


def _baseline(model: Any) -> SeasonalBaseline:
    # A SeasonalBaseline, an Ensemble (``baseline_``) or the service's SignalModel (``ensemble``).
    for candidate in (model, getattr(model, "baseline_", None), getattr(model, "ensemble", None)):
        if isinstance(candidate, SeasonalBaseline):
            return candidate
        inner = getattr(candidate, "baseline_", None)
        if isinstance(inner, SeasonalBaseline):
            return inner
    raise TypeError(f"no fitted seasonal baseline in {type(model).__name__}")


def plot_decomposition(
    frame: pd.DataFrame,
    model: Any,
    signal: str,
    *,
    replay: bool = True,
    unit: str = "",
    tz: str | tzinfo | None = None,
    save: str | Path | None = None,
) -> Figure:
    """A signal split the way the seasonal baseline sees it: trend, profile and residual.

    Parameters
    ----------
    frame : DataFrame
        Time-indexed values; ``signal`` is one of its columns and of the model's.
    model : SeasonalBaseline, Ensemble or SignalModel
        A fitted model holding a seasonal baseline.
    signal : str
        The column to show.
    replay : bool
        True when ``frame`` is the training data: the level tracker restarts from its initial
        state. False when ``frame`` follows the training data: it continues from the fitted state.
    unit : str
        Unit of the values, for the axis labels.
    tz : str or tzinfo, optional
        Time zone of the time axis (default: this machine's local time).
    save : path, optional
        Also write the figure there as PNG.

    Returns
    -------
    Figure
        Three panels: observed with trend, the daily (or weekly) profile, the residual with the
        expected band. With ``transform="log"`` the parts are in log units, as the model adds them.
    """
    base = _baseline(model)
    if signal not in base.models_:
        raise KeyError(f"{signal!r} is not a signal of the model; it has {list(base.models_)}")
    fitted = base.models_[signal]
    zone = time_zone(tz)
    x, trend, residual, half_band = _model_parts(frame, base, fitted, signal, replay)
    logged = not math.isnan(fitted.offset)
    # The parts add up in the model's space: log(x + c) under the log transform.
    label = f"log({signal} + {fitted.offset:.3g})" if logged else axis_label(signal, unit)
    part_unit = "log units" if logged else unit
    when = local_times(frame.index, zone)
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 8.5), layout="constrained")
        ax_obs, ax_prof, ax_res = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 2, 2]})
        _plot_observed(ax_obs, when, x, trend, signal, label, zone)
        _plot_profile(ax_prof, fitted, zone, when[0].normalize(), signal)
        ax_prof.set_ylabel(axis_label("seasonal offset", part_unit))
        _plot_residual(ax_res, when, residual, half_band, signal, part_unit, zone)
        fig.suptitle(f"Seasonal decomposition of {signal}", fontsize=13)
    return finish(fig, save)


def _model_parts(
    frame: pd.DataFrame, base: SeasonalBaseline, fitted: Any, signal: str, replay: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observed, trend, residual and half band width of ``signal``, in the model's space."""
    values = frame[[signal]].reindex(columns=base.signals_)
    if replay:
        base = copy.deepcopy(base).reset()
    dec = base.decompose(values.astype("float64"), advance=replay)
    t = seconds(pd.DatetimeIndex(frame.index))
    x = fitted.forward(frame[signal].to_numpy(dtype=np.float64))
    season = phase_lookup(fitted.profile, fitted.period_s, t) if fitted.period_s else 0.0 * t
    centre = fitted.forward(dec.expected[signal].to_numpy())
    trend, residual = centre - season, x - centre
    half_band = fitted.forward(dec.upper[signal].to_numpy()) - centre
    return x, trend, residual, half_band


def _plot_observed(
    ax: Axes,
    when: pd.DatetimeIndex,
    x: np.ndarray,
    trend: np.ndarray,
    signal: str,
    label: str,
    zone: tzinfo,
) -> None:
    draw_dense(ax, when, x, color="#555555", label="observed")
    ax.plot(when, trend, lw=1.6, color="#1f77b4", label="trend (level tracker)")
    ax.set(title=f"{signal}: observed and trend", ylabel=label)
    legend_outside(ax)
    time_axis(ax, zone)


def _plot_residual(
    ax: Axes,
    when: pd.DatetimeIndex,
    residual: np.ndarray,
    half_band: np.ndarray,
    signal: str,
    unit: str,
    zone: tzinfo,
) -> None:
    draw_dense(ax, when, residual, color="#555555", label="residual")
    ax.fill_between(when, -half_band, half_band, color=BAND_COLOR, alpha=0.5, label="band")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(title=f"{signal}: residual", ylabel=axis_label("residual", unit))
    legend_outside(ax)
    time_axis(ax, zone)


def _plot_profile(ax: Axes, fitted: Any, zone: tzinfo, midnight: pd.Timestamp, signal: str) -> None:
    period, profile = fitted.period_s, fitted.profile
    daily = period != WEEK_S
    ax.set_title(f"{signal}: {'daily' if daily else 'weekly'} profile")
    if not period:
        ax.text(
            0.5,
            0.5,
            f"no seasonal profile: {fitted.seasonality}",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return
    # One cycle from a local midnight (a Monday for a weekly profile), so the x axis reads as the
    # operator's clock while the profile itself is keyed by UTC phase.
    start = midnight if daily else midnight - pd.Timedelta(days=midnight.dayofweek)
    steps = max(profile.size * 4, 96)
    when = start + pd.to_timedelta(np.arange(steps + 1) * (period / steps), unit="s")
    ax.plot(when, phase_lookup(profile, period, seconds(when)), color="#2ca02c", lw=1.6)
    ax.axhline(0.0, color="black", lw=0.6)
    if daily:
        ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 3), tz=zone))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=zone))
    else:
        ax.xaxis.set_major_locator(mdates.DayLocator(tz=zone))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a", tz=zone))
    what = "time of day" if daily else "day of week"
    ax.set_xlabel(f"{what} ({zone_name(zone)})")


def plot_actual_vs_expected(
    actual: pd.Series,
    expected: pd.Series,
    lower: pd.Series,
    upper: pd.Series,
    *,
    anomalous: pd.Series | None = None,
    score: pd.Series | None = None,
    threshold: float | None = 0.95,
    signal: str | None = None,
    unit: str = "",
    tz: str | tzinfo | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Actual values against the expected value and band, anomalies marked in red.

    ``anomalous`` (0/1 per row) shades each anomalous stretch and marks its points; ``score``
    adds a panel with the calibrated anomaly score and the ``threshold`` line.
    """
    name = signal or str(actual.name or "signal")
    zone = time_zone(tz)
    when = local_times(actual.index, zone)
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 6.5 if score is not None else 4.5), layout="constrained")
        axes = fig.subplots(2 if score is not None else 1, 1, sharex=True, squeeze=False)[:, 0]
        ax = axes[0]
        low = lower.to_numpy(dtype=np.float64)
        if (actual.dropna() >= 0).all():  # a band of a never-negative signal stops at 0
            low = np.maximum(low, 0.0)
        ax.fill_between(
            when, low, upper.to_numpy(), color=BAND_COLOR, alpha=0.5, label="expected band"
        )
        ax.plot(when, expected.to_numpy(), color="#1f77b4", lw=1.2, label="expected")
        draw_dense(ax, when, actual.to_numpy(), color="#333333", label="actual", lw=0.9)
        if anomalous is not None:
            _mark_anomalies(axes, when, actual, anomalous)
        ax.set(title=f"{name}: actual vs expected", ylabel=axis_label(name, unit))
        legend_outside(ax)
        if score is not None:
            _plot_score(axes[1], when, score.reindex(actual.index), threshold, name)
        for axis in axes:
            time_axis(axis, zone)
        for axis in axes[:-1]:
            axis.set_xlabel("")  # shared time axis: labelled once, at the bottom
    return finish(fig, save)


def _mark_anomalies(
    axes: np.ndarray, when: pd.DatetimeIndex, actual: pd.Series, anomalous: pd.Series
) -> None:
    """Shade each anomalous stretch on every panel and mark its points on the first."""
    flags = anomalous.reindex(actual.index).fillna(0).to_numpy().astype(bool)
    for a, b in _runs(flags):
        for axis in axes:
            axis.axvspan(when[a], when[b - 1], color=ANOMALY_COLOR, alpha=0.12, lw=0)
    axes[0].scatter(
        when[flags],
        actual.to_numpy()[flags],
        s=14,
        color=ANOMALY_COLOR,
        zorder=3,
        label=f"anomalous ({_count(len(_runs(flags)), 'event')})",
    )


def _plot_score(
    ax: Axes, when: pd.DatetimeIndex, score: pd.Series, threshold: float | None, name: str
) -> None:
    ax.plot(when, score.to_numpy(), color="#9467bd", lw=1.0)
    if threshold is not None:
        ax.axhline(
            threshold, color=ANOMALY_COLOR, ls="--", lw=1.0, label=f"threshold {threshold:g}"
        )
        legend_outside(ax)
    ax.set(title=f"{name}: anomaly score", ylabel="anomaly score (0-1)", ylim=(-0.02, 1.02))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def plot_ensemble_scores(
    scores: Any, signal: str, *, name: str | None = None, **kwargs: Any
) -> Figure:
    """:func:`plot_actual_vs_expected` for one signal of an ``EnsembleScores``.

    ``name`` is what titles and labels call it (default: ``signal``); other keywords are
    :func:`plot_actual_vs_expected`'s.
    """
    return plot_actual_vs_expected(
        scores.actual[signal],
        scores.expected[signal],
        scores.lower[signal],
        scores.upper[signal],
        anomalous=scores.signal_anomalous[signal],
        score=scores.signal_scores[signal],
        signal=name or signal,
        **kwargs,
    )


def plot_score_distributions(
    scores: Mapping[str, Any] | pd.DataFrame,
    *,
    threshold: float | Mapping[str, float] | None = 0.95,
    bins: int = 50,
    title: str = "Anomaly score distributions",
    save: str | Path | None = None,
) -> Figure:
    """Histograms of calibrated scores in [0, 1], one per candidate (or detector), log counts.

    Well-calibrated normal data piles up near 0 with a thin tail; the share above the threshold
    is how often a candidate would alert, shown in the legend. ``threshold`` is one for all, or
    each candidate's own (its ``enter``), drawn in its colour.
    """
    columns = list(scores.items())
    edges = np.linspace(0.0, 1.0, bins + 1)
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        ax = fig.subplots()
        for name, values in columns:
            v = np.asarray(values, dtype=np.float64)
            v = v[np.isfinite(v)]
            level = threshold.get(name) if isinstance(threshold, Mapping) else threshold
            above = ""
            if level is not None and v.size:
                above = f", {np.mean(v >= level):.2%} >= {level:g}"
            (line,) = ax.hist(
                v, bins=edges, histtype="step", lw=1.5, label=f"{name} (n={v.size}{above})"
            )[2]
            if isinstance(threshold, Mapping) and level is not None:
                ax.axvline(level, color=line.get_edgecolor(), ls="--", lw=1.0)
        if threshold is not None and not isinstance(threshold, Mapping):
            ax.axvline(
                threshold, color=ANOMALY_COLOR, ls="--", lw=1.0, label=f"threshold {threshold:g}"
            )
        ax.set_yscale("log")
        ax.set(title=title, xlabel="anomaly score (0-1)", ylabel="points (log scale)", xlim=(0, 1))
        ax.legend(loc="upper right")
    return finish(fig, save)
