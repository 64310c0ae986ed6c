"""What every figure of the package shares: its look, time zones, local time axes, PNG output.

:mod:`detector.workbench.plots` and :mod:`detector.workbench.figures` draw with these, so the
notebooks' figures read as one set. Naive times in this project are UTC (Prometheus, the backtest
CSVs, the
API's ISO times); axes show them in the zone asked for, by default this machine's local time.
"""

from __future__ import annotations

import warnings
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from dateutil import tz as dateutil_tz
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "ANOMALY_COLOR",
    "BAND_COLOR",
    "STYLE",
    "axis_label",
    "draw_dense",
    "envelope",
    "finish",
    "legend_outside",
    "local_times",
    "save_png",
    "time_axis",
    "time_zone",
    "zone_name",
]

# Matplotlib rc parameters of every figure (applied with ``matplotlib.rc_context``).
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 9,
    "legend.frameon": False,
}
BAND_COLOR = "#9ecae1"
ANOMALY_COLOR = "#d62728"


def time_zone(tz: str | tzinfo | None) -> tzinfo:
    """The time zone ``tz`` names (an IANA name or a tzinfo); None: this machine's local time."""
    if tz is None:
        return dateutil_tz.tzlocal()
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def zone_name(tz: tzinfo) -> str:
    """How axis labels name the zone: its IANA key, else its abbreviation.

    >>> zone_name(ZoneInfo("Asia/Tokyo"))
    'Asia/Tokyo'
    """
    return getattr(tz, "key", None) or tz.tzname(None) or "local time"


def local_times(index: pd.Index, tz: tzinfo) -> pd.DatetimeIndex:
    """``index`` as times in ``tz``; naive times are taken as UTC."""
    index = pd.DatetimeIndex(index)
    return (index if index.tz is not None else index.tz_localize("UTC")).tz_convert(tz)


def time_axis(ax: Axes, tz: tzinfo) -> None:
    """Concise date ticks in ``tz`` on the x axis, labelled with the zone."""
    locator = mdates.AutoDateLocator(tz=tz)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    ax.set_xlabel(f"time ({zone_name(tz)})")


def legend_outside(ax: Axes) -> None:
    """The legend of ``ax`` at its right, outside the plot."""
    # A legend inside would hide data wherever it sits.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def axis_label(name: str, unit: str) -> str:
    """``"name (unit)"``, or ``name`` alone without a unit.

    >>> axis_label("rps", "req/s"), axis_label("rps", "")
    ('rps (req/s)', 'rps')
    """
    return f"{name} ({unit})" if unit else name


def save_png(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    return path


def finish(fig: Figure, save: str | Path | None) -> Figure:
    """``fig``, written as PNG to ``save`` first when that names a file."""
    if save is not None:
        save_png(fig, save)
    return fig


def envelope(
    when: pd.DatetimeIndex, values: np.ndarray, *, max_points: int = 1500
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray] | None:
    """Times, minima and maxima of consecutive buckets of ``values``, when there are more than
    ``max_points`` (a week of minutes drawn point by point is a solid block); None otherwise."""
    n = len(values)
    if n <= max_points:
        return None
    size = int(np.ceil(n / max_points))
    pad = (-n) % size
    padded = np.r_[np.asarray(values, dtype=np.float64), np.full(pad, np.nan)].reshape(-1, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bucket of gaps only: NaN, a gap
        low, high = np.nanmin(padded, axis=1), np.nanmax(padded, axis=1)
    return when[::size], low, high


def draw_dense(
    ax: Axes, when: pd.DatetimeIndex, values: np.ndarray, *, color: str, label: str, lw: float = 0.8
) -> None:
    """A line, or its min-max :func:`envelope` when it has too many points to be read as one."""
    dense = envelope(when, np.asarray(values, dtype=np.float64))
    if dense is None:
        ax.plot(when, values, lw=lw, color=color, label=label)
    else:
        t, low, high = dense
        ax.fill_between(t, low, high, color=color, alpha=0.55, lw=0, label=f"{label} (min-max)")
