"""What the ensemble says about a stretch of rows: scores, decisions, expectation and band."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from detector.core.attribution import BatchAttribution

__all__ = ["EnsembleScores"]


@dataclass(frozen=True)
class EnsembleScores:
    """Everything the ensemble says about a stretch of rows."""

    anomaly_score: pd.Series  # overall, in [0, 1]
    anomalous: pd.Series  # overall 0/1 decision after hysteresis
    signal_scores: pd.DataFrame  # per signal, in [0, 1]
    signal_anomalous: pd.DataFrame  # per signal 0/1
    family_scores: pd.DataFrame  # columns (signal or "joint", family), in [0, 1]
    actual: pd.DataFrame
    expected: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    # Per row and signal, the factor the load of the row put on the expectation (1: typical
    # load); None when no signal is load-aware (:mod:`detector.core.load`).
    load_factor: pd.DataFrame | None = None
    # Load-aware signals -> the load signals their expectation follows.
    explained_by: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Explanations of the joint family's scores, when one runs (the isolation forest's,
    # :meth:`~detector.core.families.iforest.IsolationForestDetector.contributions`).
    attribution: BatchAttribution | None = None

    def by_family(self) -> dict[str, np.ndarray]:
        """Each family's calibrated scores as a (rows, signals) array, in the signals' order; a
        joint family's one column stands for every signal."""
        values = self.family_scores.to_numpy()
        columns = self.family_scores.columns.get_level_values(0)
        families = self.family_scores.columns.get_level_values(1)
        signals = list(self.signal_scores.columns)
        out = {}
        for family in dict.fromkeys(families):
            at = np.flatnonzero(families == family)
            if list(columns[at]) == signals:
                out[family] = values[:, at]
            else:
                out[family] = np.repeat(values[:, at[:1]], len(signals), axis=1)
        return out
