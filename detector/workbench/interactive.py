"""Zoomable figures for the notebooks (plotly), beside the static PNGs that CI keeps.

A week of one-minute points is ten thousand per series: as a static image it is a solid block,
zoomed it is the day, the hour and the incident. These figures carry every point; pan and zoom
in the notebook, double-click to reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from detector.workbench.candidates import Replay
from detector.workbench.data import column_label

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

__all__ = ["interactive_history", "interactive_replay"]

_ROW_PX = 230
_BAND = "rgba(31, 119, 180, 0.18)"
_ANOMALY = "#d62728"


def _figure(titles: Sequence[str]) -> Figure:
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=max(len(titles), 1), cols=1, shared_xaxes=True, subplot_titles=list(titles)
    )
    fig.update_layout(
        height=_ROW_PX * max(len(titles), 1) + 80,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        hovermode="x unified",
        showlegend=False,
    )
    return fig


def interactive_history(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> Figure:
    """Each series of a :func:`~detector.workbench.data.readable` frame in its own panel."""
    chosen = list(frame.columns if columns is None else columns)
    fig = _figure(chosen)
    for row, column in enumerate(chosen, start=1):
        fig.add_scatter(x=frame.index, y=frame[column], mode="lines", name=column, row=row, col=1)
    return fig


def interactive_replay(
    replays: Iterable[Replay], candidate: str, *, signals: Iterable[str] | None = None
) -> Figure:
    """Actual values against the expected value and band of ``candidate``'s replay, anomalous
    points in red, one panel per series (of ``signals``; default those that alerted, else all).
    """
    mine = [r for r in replays if r.candidate == candidate]
    if signals is not None:
        wanted = set(signals)
        mine = [r for r in mine if r.signal in wanted]
    elif any(r.scores.signal_anomalous.to_numpy().any() for r in mine):
        mine = [r for r in mine if r.scores.signal_anomalous.to_numpy().any()]
    panels = [(r, key) for r in mine for key in r.scores.actual.columns]
    fig = _figure([column_label(r.signal, str(key)) for r, key in panels])
    for row, (replay, key) in enumerate(panels, start=1):
        res = replay.scores
        when = res.actual.index
        lower = res.lower[key].to_numpy(dtype=np.float64)
        upper = res.upper[key].to_numpy(dtype=np.float64)
        fig.add_scatter(x=when, y=upper, mode="lines", line={"width": 0}, row=row, col=1)
        fig.add_scatter(
            x=when, y=lower, mode="lines", line={"width": 0}, fill="tonexty", fillcolor=_BAND,
            name="band", row=row, col=1,
        )  # fmt: skip
        fig.add_scatter(x=when, y=res.expected[key], mode="lines", name="expected", row=row, col=1)
        fig.add_scatter(x=when, y=res.actual[key], mode="lines", name="actual", row=row, col=1)
        flagged = res.signal_anomalous[key].to_numpy() != 0
        fig.add_scatter(
            x=when[flagged], y=res.actual[key].to_numpy()[flagged], mode="markers",
            marker={"color": _ANOMALY, "size": 5}, name="anomalous", row=row, col=1,
        )  # fmt: skip
    return fig
