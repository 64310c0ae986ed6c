"""Figures of the notebooks beyond :mod:`detector.workbench.plots`: profiles, event timelines,
co-movement.

Built without pyplot like :mod:`detector.workbench.plots` and in its look
(:mod:`detector.workbench.plot_common`): no global state, no display needed, titles, units and times
in local time (or the ``tz`` given);
each ``save`` writes a PNG. The ``*_figures`` functions draw one figure per series and return
the PNG paths, which :func:`show` displays in a notebook.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import tzinfo
from pathlib import Path

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from detector.service.training import SignalModel
from detector.workbench.candidates import Replay
from detector.workbench.data import column_label, unit_of
from detector.workbench.plot_common import (
    ANOMALY_COLOR,
    BAND_COLOR,
    STYLE,
    axis_label,
    finish,
    local_times,
    time_axis,
    time_zone,
    zone_name,
)
from detector.workbench.plots import plot_decomposition, plot_ensemble_scores

__all__ = [
    "decomposition_figures",
    "figure_path",
    "plot_correlation",
    "plot_deviations",
    "plot_event_timeline",
    "plot_weekly_profile",
    "replay_figures",
    "show",
]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def figure_path(out_dir: str | Path, *parts: str) -> Path:
    """``out_dir/<parts joined by '-'>.png`` with characters unsafe in file names replaced.

    >>> figure_path("out", "decomposition", 'mem{device="0"}').as_posix()
    'out/decomposition-mem_device_0_.png'
    """
    return Path(out_dir) / (_UNSAFE.sub("_", "-".join(parts)) + ".png")


def plot_weekly_profile(
    series: pd.Series,
    *,
    name: str | None = None,
    unit: str = "",
    tz: str | tzinfo | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Median value by weekday and hour (a heat map), and the daily profile with its spread."""
    name = name or str(series.name)
    zone = time_zone(tz)
    local = series.set_axis(local_times(series.index, zone)).dropna()
    grid = (
        local.groupby([local.index.day_of_week, local.index.hour])
        .median()
        .unstack()
        .reindex(index=range(7), columns=range(24))
    )
    hourly = local.groupby(local.index.hour).quantile([0.25, 0.5, 0.75]).unstack()
    hourly = hourly.reindex(range(24))
    label = axis_label(name, unit)
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 6.5), layout="constrained")
        ax_week, ax_day = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
        image = ax_week.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", origin="upper")
        ax_week.set(
            title=f"{name}: weekly profile (median per hour)",
            yticks=range(7),
            yticklabels=_DAYS,
            xticks=range(0, 24, 2),
            xlabel=f"hour of day ({zone_name(zone)})",
        )
        ax_week.grid(False)
        fig.colorbar(image, ax=ax_week, label=label)
        hours = np.arange(24)
        ax_day.fill_between(
            hours, hourly[0.25], hourly[0.75], color=BAND_COLOR, alpha=0.6, label="25-75 %"
        )
        ax_day.plot(hours, hourly[0.5], color="#1f77b4", lw=1.6, label="median")
        ax_day.set(
            title=f"{name}: daily profile, all days",
            xlabel=f"hour of day ({zone_name(zone)})",
            ylabel=label,
            xticks=range(0, 24, 2),
            xlim=(0, 23),
        )
        ax_day.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return finish(fig, save)


def decomposition_figures(
    frame: pd.DataFrame,
    models: Mapping[str, SignalModel],
    out_dir: str | Path,
    *,
    tz: str | tzinfo | None = None,
) -> list[Path]:
    """For every series of ``models``: its seasonal decomposition and its weekly profile, as PNG.

    ``frame`` holds the series under the models' column names (``readable`` history and
    ``fit_models(..., display_names=True)``).
    """
    paths = []
    for signal, model in models.items():
        for column in model.columns:
            unit = unit_of(signal)
            path = figure_path(out_dir, "decomposition", column)
            plot_decomposition(frame[[column]], model, column, unit=unit, tz=tz, save=path)
            paths.append(path)
            path = figure_path(out_dir, "profile", column)
            plot_weekly_profile(frame[column], name=column, unit=unit, tz=tz, save=path)
            paths.append(path)
    return paths


def replay_figures(
    replays: Iterable[Replay],
    candidate: str,
    out_dir: str | Path,
    *,
    tz: str | tzinfo | None = None,
) -> list[Path]:
    """Actual vs expected with the band, anomalies marked and the score below, for every series
    a ``candidate`` replayed (:func:`~detector.workbench.candidates.replay_history`), as PNG."""
    paths = []
    for r in replays:
        if r.candidate != candidate:
            continue
        for key in r.model.columns:
            name = column_label(r.signal, key)
            path = figure_path(out_dir, "actual-vs-expected", name)
            plot_ensemble_scores(
                r.scores,
                key,
                name=name,
                threshold=r.settings.thresholds.enter,
                unit=unit_of(r.signal),
                tz=tz,
                save=path,
            )
            paths.append(path)
    return paths


def plot_event_timeline(
    events: pd.DataFrame,
    *,
    start: float | None = None,
    end: float | None = None,
    tz: str | tzinfo | None = None,
    title: str = "Anomaly events",
    save: str | Path | None = None,
) -> Figure:
    """One row per series, one bar per event from start to end, coloured by its peak score.

    ``start`` and ``end`` (unix seconds) set the time axis to the range reviewed.
    """
    zone = time_zone(tz)
    now = pd.Timestamp.now(tz="UTC")
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 1.5 + 0.45 * max(events["series"].nunique(), 2)))
        fig.set_layout_engine("constrained")
        ax = fig.subplots()
        ax.set_title(title)
        if events.empty:
            ax.text(0.5, 0.5, "no events in this range", ha="center", transform=ax.transAxes)
            return finish(fig, save)
        rows = list(dict.fromkeys(events.sort_values("start")["series"]))
        cmap = mpl.colormaps["plasma_r"]
        starts = local_times(events["start"], zone)
        ends = local_times(events["end"].where(events["end"].notna(), now), zone)
        for first, last, series, score in zip(
            starts, ends, events["series"], events["peak_score"], strict=True
        ):
            width = max(last - first, pd.Timedelta(seconds=30))  # a one-point event stays visible
            ax.barh(
                rows.index(series),
                mdates.date2num(first + width) - mdates.date2num(first),
                left=mdates.date2num(first),
                height=0.6,
                color=cmap(float(score)),
            )
        ax.set_yticks(range(len(rows)), rows)
        ax.invert_yaxis()
        ax.xaxis_date(zone)
        if start is not None and end is not None:
            ax.set_xlim(*mdates.date2num(local_times(pd.to_datetime([start, end], unit="s"), zone)))
        time_axis(ax, zone)
        scale = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=cmap)
        fig.colorbar(scale, ax=ax, label="peak anomaly score (0-1)")
    return finish(fig, save)


def plot_deviations(
    z: pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    threshold: float = 3.0,
    tz: str | tzinfo | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Robust z-scores of every series over time (heat map), and the lines of those that moved."""
    zone = time_zone(tz)
    when = local_times(z.index, zone)
    moved = [c for c in z.columns if (z[c].abs() >= threshold).any()]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(11, 6 + 0.3 * z.shape[1]), layout="constrained")
        ax_map, ax_lines = fig.subplots(2, 1, sharex=True)
        ax_map.set_title("Deviation from the same time on earlier days (robust z, clipped at 10)")
        ax_map.grid(False)
        if z.shape[0] > 1:
            # Each cell spans from its row's time to the next row's.
            mesh = ax_map.pcolormesh(
                mdates.date2num(when),
                np.arange(z.shape[1] + 1),
                np.clip(z.to_numpy().T[:, :-1], -10, 10),
                cmap="RdBu_r",
                vmin=-10,
                vmax=10,
                shading="flat",
            )
            fig.colorbar(mesh, ax=ax_map, label="robust z-score")
        ax_map.set_yticks(np.arange(z.shape[1]) + 0.5, list(z.columns))
        ax_map.set_ylim(z.shape[1], 0)
        for column in moved:
            ax_lines.plot(when, z[column].to_numpy(), lw=1.0, label=column)
        for sign in (-1, 1):
            ax_lines.axhline(sign * threshold, color=ANOMALY_COLOR, ls="--", lw=0.8)
        if events is not None and not events.empty:
            ends = events["end"].where(events["end"].notna(), pd.Timestamp.now(tz="UTC"))
            for start, end in zip(
                local_times(events["start"], zone), local_times(ends, zone), strict=True
            ):
                ax_lines.axvspan(start, end, color=ANOMALY_COLOR, alpha=0.08, lw=0)
        ax_lines.set(title=f"Series beyond ±{threshold:g} (events shaded)", ylabel="robust z-score")
        if moved:
            ax_lines.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        time_axis(ax_lines, zone)
        ax_map.xaxis_date(zone)
    return finish(fig, save)


def plot_correlation(
    matrix: pd.DataFrame,
    *,
    title: str = "Correlation of the deviations",
    save: str | Path | None = None,
) -> Figure:
    """A correlation matrix as an annotated heat map from -1 to 1."""
    n = matrix.shape[0]
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(2.5 + 0.8 * n, 1.5 + 0.7 * n), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(matrix.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(n), list(matrix.columns), rotation=45, ha="right")
        ax.set_yticks(range(n), list(matrix.index))
        ax.grid(False)
        for i in range(n):
            for j in range(n):
                value = matrix.iat[i, j]
                if np.isfinite(value):
                    # Light text on the dark ends of the colour scale, dark text elsewhere.
                    color = "white" if abs(value) > 0.6 else "black"
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label="correlation")
    return finish(fig, save)


def show(paths: Iterable[str | Path], *, headings: bool = False) -> None:
    """Display saved PNGs in a notebook, in order (exactly what was written to disk); with
    ``headings``, each under a heading named after its file (``decomposition: latency_p95``)."""
    from IPython.display import Image, Markdown, display

    for path in paths:
        if headings:
            kind, _, name = Path(path).stem.partition("-")
            display(Markdown(f"### {kind}: {name}"))
        display(Image(filename=str(path)))
