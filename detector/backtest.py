"""Causal backtest: every row is scored by a model fitted on earlier rows only.

The model is refitted as the service would refit it: every ``refit_every`` seconds on the last
``training_window`` of data, and, while history is short, whenever the history has doubled, so a
young series gets a better model as soon as it has the data for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from detector.base import check_frame, check_range
from detector.ensemble import Ensemble
from detector.timeutil import DAY_S, seconds

__all__ = ["BacktestSettings", "backtest", "refit_points"]


@dataclass(frozen=True)
class BacktestSettings:
    """When the backtest refits, and on what."""

    # Measured on the scenarios and NAB (docs/evaluation.md): a month of history calibrates the
    # score tails better than two weeks, and refitting twice a day keeps a backtest of the NAB
    # corpus under a minute on two cores with no loss against four times a day worth the cost.
    refit_every: float = 12 * 3600.0
    training_window: float = 30 * DAY_S
    min_train_points: int = 50
    min_train_span: float = 2 * DAY_S

    def __post_init__(self) -> None:
        check_range("refit_every", self.refit_every, 0.0, np.inf, closed="neither")
        check_range("training_window", self.training_window, 0.0, np.inf, closed="neither")
        check_range("min_train_points", self.min_train_points, 3, 1e9)
        check_range("min_train_span", self.min_train_span, 0.0, np.inf)


def refit_points(t: np.ndarray, settings: BacktestSettings) -> list[int]:
    """Row positions at which a new model takes over (it is fitted on the rows before).

    The first model needs ``min_train_points`` rows spanning ``min_train_span`` seconds.

    >>> settings = BacktestSettings(refit_every=300, min_train_points=50, min_train_span=60)
    >>> refit_points(np.arange(0.0, 1000.0), settings)
    [60, 120, 240, 480, 780]
    """
    points: list[int] = []
    by_span = int(np.searchsorted(t, t[0] + settings.min_train_span, side="left")) if t.size else 0
    i = max(int(settings.min_train_points), by_span)
    while i < t.size:
        points.append(i)
        by_time = int(np.searchsorted(t, t[i] + settings.refit_every, side="left"))
        i = max(min(by_time, 2 * i), i + 1)
    return points


def backtest(
    frame: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    settings: BacktestSettings | None = None,
    *,
    progress: bool | None = False,
) -> pd.DataFrame:
    """Score ``frame`` causally; returns ``anomaly_score``, ``anomalous`` and ``<signal>_score``.

    Rows before the first model (warm-up) score 0. ``progress=None`` shows a bar on a terminal.
    """
    settings = settings or BacktestSettings()
    frame = check_frame(frame)
    n = frame.shape[0]
    t = seconds(frame.index)
    columns = ["anomaly_score", "anomalous", *(f"{s}_score" for s in frame.columns)]
    out = np.zeros((n, len(columns)))
    points = refit_points(t, settings)
    bounds = [*points, n]
    model: Ensemble | None = None
    disable = True if progress is False else (None if progress is None else False)
    for k in tqdm(range(len(points)), disable=disable, leave=False, unit="refit"):
        start, stop = bounds[k], bounds[k + 1]
        first = int(np.searchsorted(t, t[start] - settings.training_window, side="left"))
        fresh = Ensemble(**dict(params or {})).fit(frame.iloc[first:start])
        if model is not None:
            fresh.carry_decisions(model)
        model = fresh
        res = model.update(frame.iloc[start:stop])
        out[start:stop, 0] = res.anomaly_score.to_numpy()
        out[start:stop, 1] = res.anomalous.to_numpy()
        out[start:stop, 2:] = res.signal_scores.to_numpy()
    result = pd.DataFrame(out, index=frame.index, columns=columns)
    result["anomalous"] = result["anomalous"].astype(np.int8)
    return result
