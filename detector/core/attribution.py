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

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
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
    """Contributions for the rows of one scored batch, worked out when first asked for.

    The ensemble builds one with every batch it scores while it runs a joint family
    (:attr:`EnsembleScores.attribution <detector.core.ensemble.EnsembleScores.attribution>`):
    everything an explanation needs is given here, so :meth:`at` can be asked any time after.

    Parameters
    ----------
    family : str
        The joint family explained (its name in the ensemble).
    forest : IsolationForestDetector
        The fitted family.
    state : Window
        Its streaming state before the batch (a copy the family no longer changes).
    residuals : DataFrame
        The batch's standardised residuals, which the family scored.
    top : int
        Contributions returned per row.
    """

    def __init__(
        self,
        family: str,
        forest: IsolationForestDetector,
        state: Window,
        residuals: pd.DataFrame,
        *,
        top: int = TOP,
    ) -> None:
        self.family = family
        self.top = top
        self._forest = forest
        self._state = state
        self._residuals = residuals
        self._features: pd.DataFrame | None = None
        self._done: dict[int, dict[str, float]] = {}

    def at(self, row: int) -> dict[str, float]:
        """Up to ``top`` features that made row ``row`` (position in the batch) anomalous."""
        if row not in self._done:
            if self._features is None:
                # Rows' window features depend on the rows before: built once for the batch.
                self._features = self._forest.features(self._residuals, self._state)
            credit = self._forest.contributions(self._features.iloc[[row]]).iloc[0]
            self._done[row] = top_contributions(credit, self.top)
        return dict(self._done[row])
