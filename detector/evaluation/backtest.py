"""Causal backtest: every row is scored by a model fitted on earlier rows only.

The model is refitted as the service would refit it: every ``refit_every`` seconds on the last
``training_window`` of data, and, while history is short, whenever the history has doubled, so a
young series gets a better model as soon as it has the data for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from detector.core.base import check_frame
from detector.core.defaults import BacktestSettings
from detector.core.ensemble import Ensemble
from detector.core.timeutil import seconds

__all__ = ["BacktestSettings", "backtest", "refit_points"]


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
    signal_decisions: bool = False,
) -> pd.DataFrame:
    """Score ``frame`` causally; returns ``anomaly_score``, ``anomalous`` and ``<signal>_score``.

    Rows before the first model (warm-up) score 0. ``progress=None`` shows a bar on a terminal.
    ``signal_decisions`` adds each signal's 0/1 decision as ``<signal>_anomalous`` (the
    evaluation's record of which signal paged).
    """
    settings = settings or BacktestSettings()
    frame = check_frame(frame)
    n = frame.shape[0]
    t = seconds(frame.index)
    columns = ["anomaly_score", "anomalous", *(f"{s}_score" for s in frame.columns)]
    if signal_decisions:
        columns += [f"{s}_anomalous" for s in frame.columns]
    width = frame.shape[1]
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
        out[start:stop, 2 : 2 + width] = res.signal_scores.to_numpy()
        if signal_decisions:
            out[start:stop, 2 + width :] = res.signal_anomalous.to_numpy()
    result = pd.DataFrame(out, index=frame.index, columns=columns)
    result["anomalous"] = result["anomalous"].astype(np.int8)
    return result
