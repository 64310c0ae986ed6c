"""What a detector can and cannot see: detection per incident, pooled per kind and size.

One F1 hides which incidents were missed. Here every labelled incident of the scenarios gets its
own outcome from the ``anomalous`` decision: whether an alarm overlapped it, how long after its
start the first alarm came (and after it became *visible*, i.e. left a three-deviation band:
the same as the start for a step change, later for a ramp), and which share of its rows the
alarm covered. :func:`sensitivity_table` pools them per kind of incident and strength.

Examples
--------
>>> index = pd.date_range("2026-01-05", periods=60, freq="1min")
>>> decisions = np.zeros(60, dtype=int)
>>> decisions[12:25] = 1
>>> start, end = index[10], index[29]
>>> out = incident_outcome(index, decisions, start, end, visible=index[11])
>>> out.detected, out.delay_s, out.delay_visible_s, out.share
(True, 120.0, 60.0, 0.65)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detector.core.load import is_latency_like

__all__ = ["IncidentOutcome", "incident_outcome", "sensitivity_table"]


@dataclass(frozen=True)
class IncidentOutcome:
    """How one incident was seen.

    ``paged`` lists the signals whose own decision was on during the incident (when the
    per-signal decisions were given). ``delay_s`` runs from the labelled start (0 when an alarm
    was already on), ``delay_visible_s`` from the time the change became visible (0 when the
    alarm came earlier); both NaN when the incident was missed. ``share`` is the fraction of
    the incident's rows with ``anomalous`` on.
    """

    kind: str
    strength: str
    step_s: float
    detected: bool
    delay_s: float
    delay_visible_s: float
    share: float
    # The signals whose own decision was on during the incident: which ones paged.
    paged: tuple[str, ...] = ()


def incident_outcome(
    index: pd.DatetimeIndex,
    decisions: np.ndarray,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    visible: pd.Timestamp,
    kind: str = "",
    strength: str = "",
    step_s: float = math.nan,
    signals: pd.DataFrame | None = None,
) -> IncidentOutcome:
    """The outcome of the incident ``[start, end]`` under the 0/1 ``decisions`` over ``index``;
    ``signals`` are the per-signal decisions over the same index."""
    on = np.nan_to_num(np.asarray(decisions, dtype=float)) != 0
    inside = (index >= start) & (index <= end)
    paged: tuple[str, ...] = ()
    if signals is not None:
        during = np.nan_to_num(signals.to_numpy(dtype=float)[inside]) != 0
        hits = during.any(axis=0)
        paged = tuple(str(c) for c, hit in zip(signals.columns, hits, strict=True) if hit)
    rows = np.flatnonzero(inside & on)
    share = float(on[inside].mean()) if inside.any() else 0.0
    if rows.size == 0:
        return IncidentOutcome(kind, strength, step_s, False, math.nan, math.nan, share, paged)
    first = index[rows[0]]
    # An alarm that began before the window and is still on at its start detects it at once.
    before = np.flatnonzero(index < start)
    if before.size and on[before[-1]] and rows[0] == before[-1] + 1:
        first = start
    delay = max((first - start).total_seconds(), 0.0)
    delay_visible = max((first - visible).total_seconds(), 0.0)
    return IncidentOutcome(kind, strength, step_s, True, delay, delay_visible, share, paged)


def _paged_by(paged: Iterable[tuple[str, ...]]) -> str:
    counts = Counter(signal for signals in paged for signal in signals)
    return ", ".join(f"{signal} {n}" for signal, n in counts.most_common())


def sensitivity_table(outcomes: Iterable[IncidentOutcome]) -> pd.DataFrame:
    """Detection rate, median delays and median share flagged per kind and strength.

    Columns: ``incidents``, ``detected``, ``rate``, ``delay_min`` (median from the start, over
    detected incidents), ``visible_delay_min`` (median from leaving the band), ``share`` (median
    over all incidents, missed ones counting 0), and ``rate_30s``/``rate_60s``-style detection
    rates per step; ``latency_paged`` (incidents during which a latency-like signal's own
    decision was on, i.e. it paged as a latency regression) and ``paged_by`` (the signals that
    paged, with how many incidents each).
    """
    frame = pd.DataFrame([o.__dict__ for o in outcomes])
    if frame.empty:
        return pd.DataFrame()
    rows = {}
    for (kind, strength), part in frame.groupby(["kind", "strength"], sort=False):
        hit = part[part.detected]
        row = {
            "incidents": len(part),
            "detected": int(part.detected.sum()),
            "rate": float(part.detected.mean()),
            "delay_min": float(hit.delay_s.median() / 60.0) if len(hit) else math.nan,
            "visible_delay_min": (
                float(hit.delay_visible_s.median() / 60.0) if len(hit) else math.nan
            ),
            "share": float(part.share.median()),
            "latency_paged": int(sum(any(is_latency_like(s) for s in p) for p in part.paged)),
            "paged_by": _paged_by(part.paged),
        }
        for step, by_step in part.groupby("step_s"):
            row[f"rate_{step:g}s"] = float(by_step.detected.mean())
        rows[(kind, strength)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["kind", "strength"])
    return out
