"""Isolation-forest contributions for the rows the service records, worked out only when asked.

The joint forest gives one score per row for all series of a signal. When an event opens or
updates at a row where that score crossed the threshold, the tracker records the features that
shortened the row's isolation paths most (:meth:`IsolationForestDetector.contributions
<detector.core.families.iforest.IsolationForestDetector.contributions>`, which explains the choice
of method). Explaining every scored row would cost as much again as scoring it, so
:class:`BatchAttribution` keeps what a row's explanation needs — the forest's streaming state
before the batch and the batch's residuals — and explains a row the first time it is asked for.

Examples
--------
>>> credit = pd.Series({'{model="a"}:z': 0.31, '{model="a"}:jump': 0.12, '{model="b"}:z': -0.04})
>>> top_contributions(credit, 5)
{'{model="a"}:z': 0.31, '{model="a"}:jump': 0.12}
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from detector.core.ensemble import Ensemble, EnsembleScores
    from detector.core.families.iforest import IsolationForestDetector
    from detector.core.features import Window

__all__ = ["TOP", "BatchAttribution", "top_contributions"]

TOP = 5  # contributions recorded per event point


def top_contributions(credit: pd.Series, n: int = TOP) -> dict[str, float]:
    """The ``n`` largest positive contributions, largest first.

    Features with no or negative credit kept the row with the bulk of the data: they did not
    contribute to its being anomalous, so they are not listed.
    """
    positive = credit[credit > 0]
    # A stable sort: equal credits keep the forest's feature order, so the answer is repeatable.
    best = positive.sort_values(ascending=False, kind="stable").iloc[: max(int(n), 0)]
    return {str(name): float(value) for name, value in best.items()}


class BatchAttribution:
    """Contributions for the rows of one batch that an ensemble scores.

    Create it right before ``ensemble.update(batch)`` (it copies the forest's streaming state),
    hand it the update's result with :meth:`scored`, then ask :meth:`at` for the rows recorded.
    An ensemble without the isolation forest explains nothing (every answer is empty).

    Parameters
    ----------
    ensemble : Ensemble
        A fitted ensemble, before it scores the batch.
    top : int
        Contributions returned per row.
    """

    def __init__(self, ensemble: Ensemble, *, top: int = TOP) -> None:
        members = getattr(ensemble, "members_", {})
        self._forest: IsolationForestDetector | None = members.get("iforest")
        self._state: Window | None = (
            copy.deepcopy(self._forest.state_) if self._forest is not None else None
        )
        self._residuals: pd.DataFrame | None = None
        self._features: pd.DataFrame | None = None
        self._done: dict[int, dict[str, float]] = {}
        self.top = top

    def scored(self, result: EnsembleScores) -> None:
        """The result of the ``update`` that scored the batch."""
        self._residuals = result.residuals
        self._features = None
        self._done.clear()

    def at(self, row: int) -> dict[str, float]:
        """Up to ``top`` features that made row ``row`` (position in the batch) anomalous."""
        if self._forest is None or self._residuals is None:
            return {}
        if row not in self._done:
            if self._features is None:
                # Rows' window features depend on the rows before: built once for the batch.
                self._features = self._forest.features(self._residuals, self._state)
            credit = self._forest.contributions(self._features.iloc[[row]]).iloc[0]
            self._done[row] = top_contributions(credit, self.top)
        return dict(self._done[row])
