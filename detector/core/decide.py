"""The ensemble's pass after the baseline: every family's scores, each signal's, the decisions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from detector.core.base import BaseDetector
from detector.core.families.decomposition import Parts
from detector.core.hysteresis import HysteresisGroup
from detector.core.refractory import Refractory

__all__ = ["decide", "run_families", "signal_maxima"]


def decide(
    matrix: np.ndarray,
    per_signal: np.ndarray,
    keep: np.ndarray | None,
    *,
    hysteresis: HysteresisGroup,
    refractory: Refractory,
    column_units: np.ndarray,
    enter: float,
    leave: float,
    advance: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The decisions per signal and overall, and which rows' scores are held (repeats).

    ``matrix`` holds the calibrated scores of every (signal or joint column, family),
    ``per_signal`` each signal's largest, ``keep`` where a lasting deviation keeps a signal's
    event open; ``column_units`` maps the matrix's columns to refractory units (signals first,
    then joint columns).
    """
    n = per_signal.shape[1]
    # Decisions come from the scores as calibrated: the hysteresis already keeps one alarm
    # per episode, and ``min_points`` needs consecutive rows that holding would cap.
    # The overall column's own hysteresis sees only the cross-signal (joint) columns; the
    # overall alarm is on while it or any signal's alarm is.
    joint = np.flatnonzero(column_units >= n)
    overall_in = matrix[:, joint].max(axis=1) if joint.size else np.zeros(matrix.shape[0])
    decisions = np.column_stack([per_signal, overall_in])
    if keep is not None:
        # A lasting deviation holds a signal's score at ``leave`` for the hysteresis: its
        # open event stays open, a closed one does not open (``leave`` is below ``enter``).
        hold = min(leave, float(np.nextafter(enter, -np.inf)))
        decisions[:, :n] = np.where(keep, np.maximum(per_signal, hold), per_signal)
    was_on = hysteresis.on[:n].astype(bool)
    decided = hysteresis.decide(decisions, advance=advance)
    decided[:, n] = np.maximum(decided[:, n], decided[:, :n].max(axis=1, initial=0))
    # A signal's onset is found on its score across families; a held row holds every
    # family's score of that signal, so no detector column reports the repeat either. Rows
    # that continue an open event are repeats too: the event is the news, once.
    units = _unit_scores(matrix, per_signal, column_units, len(refractory))
    held = refractory.hold(units, advance=advance)
    on = decided[:, :n].astype(bool)
    held[:, :n] |= on & np.vstack([was_on[None, :], on[:-1]])
    return decided, held


def _unit_scores(
    matrix: np.ndarray, per_signal: np.ndarray, column_units: np.ndarray, units: int
) -> np.ndarray:
    """Scores of the refractory units: each signal's, then each joint column's maximum."""
    n = per_signal.shape[1]
    extra = units - n
    if extra == 0:
        return per_signal
    joint = np.full((matrix.shape[0], extra), -np.inf)
    for column, unit in enumerate(column_units):
        if unit >= n:
            np.maximum(joint[:, unit - n], matrix[:, column], out=joint[:, unit - n])
    return np.hstack([per_signal, joint])


def run_families(
    members: Mapping[str, BaseDetector], parts: Parts, persist: float, *, advance: bool
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Every family's raw alarm scores, and where a lasting deviation (at least ``persist``
    in a family's held score) keeps a signal's event open."""
    raw: dict[str, np.ndarray] = {}
    keep = None
    for name, member in members.items():
        out = member.run(member.inputs(parts), advance=advance)
        held = member.holds(out)
        if held is not None:
            keep = held >= persist if keep is None else keep | (held >= persist)
        raw[name] = member.alarm_scores(out)
    return raw, keep


def signal_maxima(
    matrix: np.ndarray, raw: Mapping[str, np.ndarray], members: Mapping[str, BaseDetector], n: int
) -> np.ndarray:
    """Each signal's calibrated score: the largest over its per-signal families' columns."""
    per_signal = matrix[:, :n].copy()
    start = 0
    for family, scores in raw.items():
        if not members[family].joint:
            np.maximum(per_signal, matrix[:, start : start + n], out=per_signal)
        start += scores.shape[1]
    return per_signal
