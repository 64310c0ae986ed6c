"""What the seasonal baseline makes of rows: residuals, expectation and band (frames or arrays)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

__all__ = ["Decomposition", "Parts"]


@dataclass(frozen=True)
class Decomposition:
    """Per-row view of the baseline: signed standardised residuals, expectation and band.

    ``z`` is measured against the fast tracker (what is new since the last few points); ``u``,
    the expectation and the band are the slow tracker's, the stable picture an operator compares
    with. For ratio columns ``events`` and ``means`` are the counts seen and expected (against
    the slow tracker) behind each row, so that windows of rows can be scored as counts; they are
    NaN in other columns.
    """

    z: pd.DataFrame
    u: pd.DataFrame
    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    events: pd.DataFrame
    means: pd.DataFrame


@dataclass(frozen=True)
class Parts:
    """:class:`Decomposition` as arrays (rows, signals in the baseline's order), as the ensemble
    scores it; :meth:`frames` gives the frames."""

    z: np.ndarray
    u: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    events: np.ndarray
    means: np.ndarray
    # Load factors (:mod:`detector.core.load`) the expectation was multiplied by; None: none.
    factors: np.ndarray | None = None

    def frames(self, index: pd.Index, columns: pd.Index) -> Decomposition:
        """The same values as frames with this index and these columns."""
        values = (getattr(self, f.name) for f in fields(Decomposition))
        return Decomposition(*(pd.DataFrame(v, index=index, columns=columns) for v in values))
