"""A signal's fitted model: one ensemble over all of the signal's series, and how to train it.

The ensemble's columns are the series keys (:func:`detector.service.source.series_key`), so the
series of a signal are scored together with arrays, and the signal's false-alarm budget is shared
among its
series (the ensemble calibrates every column against the same horizon times their number).
This is the object the registry stores; notebooks use :func:`fit_signal_model` and
:func:`train_signal` as the service does.

Examples
--------
>>> from detector.service.config import SignalSettings
>>> idx = pd.date_range("2026-01-05", periods=3000, freq="60s")
>>> rng = np.random.default_rng(0)
>>> frame = pd.DataFrame({'{gpu="0"}': 1 + 0.05 * rng.normal(size=3000)}, index=idx)
>>> model = fit_signal_model(frame, SignalSettings(name="mem", query="x", direction="up"))
>>> model.columns
['{gpu="0"}']
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from detector.core.ensemble import Ensemble
from detector.core.signal_roles import is_latency_like
from detector.core.timeutil import seconds
from detector.registry.manifest import data_hash
from detector.service.config import DetectorSettings, Shard, SignalSettings

if TYPE_CHECKING:
    from detector.registry.manifest import ModelVersion
    from detector.registry.store import ModelRegistry
    from detector.service.source import Source

__all__ = [
    "SignalModel",
    "denominator_trials",
    "fit_signal_model",
    "load_covariates",
    "registry_name",
    "train_signal",
    "trainable_columns",
]

_log = logging.getLogger(__name__)


@dataclass
class SignalModel:
    """A fitted ensemble for one signal, with the labels of the series it covers.

    ``seen_until`` is the last timestamp (unix seconds) the ensemble's streaming state has
    absorbed; a model installed later first catches up on the rows after it.
    """

    signal: str
    ensemble: Ensemble
    labels: dict[str, dict[str, str]]
    training_start: float
    training_end: float
    params: dict[str, Any]
    step: float
    seen_until: float = math.nan
    evaluation: dict[str, float] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Series keys the model scores, in the ensemble's column order."""
        return list(self.ensemble.signals_)

    @property
    def families(self) -> list[str]:
        """Detector families the ensemble runs."""
        return list(self.ensemble.families)


def registry_name(signal: str, shard: Shard) -> str:
    """The registry folder of a signal's model; each shard of a sharded service has its own.

    >>> registry_name("rps", Shard(0, 1)), registry_name("rps", Shard(1, 4))
    ('rps', 'rps.shard-1-of-4')
    """
    return signal if shard.count == 1 else f"{signal}.shard-{shard.index}-of-{shard.count}"


def trainable_columns(frame: pd.DataFrame, min_points: int, min_span: float) -> list[str]:
    """Columns with at least ``min_points`` values spanning at least ``min_span`` seconds."""
    out = []
    t = seconds(frame.index) if frame.shape[0] else np.zeros(0)
    for column in frame.columns:
        ok = np.isfinite(frame[column].to_numpy(dtype=np.float64))
        if ok.sum() >= min_points and t[ok][-1] - t[ok][0] >= min_span:
            out.append(str(column))
    return out


def denominator_trials(
    frame: pd.DataFrame, rates: pd.DataFrame | None, step: float
) -> pd.DataFrame | None:
    """Requests behind each row of a ratio signal's series: its denominator's rate x step.

    ``rates`` are the denominator signal's series (per second); a ratio series takes the rate
    series with the same labels, or the only one there is. Rows or series without a rate are
    NaN (the ratio's trials are then inferred from its spread by time of day).

    >>> idx = pd.date_range("2026-01-05", periods=2, freq="60s")
    >>> ratio = pd.DataFrame({'{gpu="0"}': [0.1, 0.0]}, index=idx)
    >>> rates = pd.DataFrame({"{}": [2.0, 3.0]}, index=idx)
    >>> denominator_trials(ratio, rates, 60.0).iloc[:, 0].tolist()
    [120.0, 180.0]
    """
    if rates is None or not rates.shape[1]:
        return None
    aligned = rates.reindex(index=frame.index)
    out = {}
    for column in frame.columns:
        if column in aligned.columns:
            out[column] = aligned[column].to_numpy() * step
        elif aligned.shape[1] == 1:
            out[column] = aligned.iloc[:, 0].to_numpy() * step
    return pd.DataFrame(out, index=frame.index) if out else None


def load_covariates(
    frame: pd.DataFrame, loads: Mapping[str, pd.DataFrame | None]
) -> pd.DataFrame | None:
    """The load signals' values on ``frame``'s rows, one column per load signal.

    A load signal with one series gives it; with several (one per instance), their mean, so
    that the load of a typical instance is what the expectation follows. None without any.

    >>> idx = pd.date_range("2026-01-05", periods=2, freq="60s")
    >>> rps = pd.DataFrame({'{pod="a"}': [2.0, 4.0], '{pod="b"}': [4.0, 6.0]}, index=idx)
    >>> load_covariates(pd.DataFrame(index=idx), {"rps": rps})["rps"].tolist()
    [3.0, 5.0]
    """
    out = {}
    for name, series in loads.items():
        if series is not None and series.shape[1]:
            out[name] = series.reindex(index=frame.index).mean(axis=1).to_numpy()
    return pd.DataFrame(out, index=frame.index) if out else None


def fit_signal_model(
    frame: pd.DataFrame,
    signal: SignalSettings,
    labels: dict[str, dict[str, str]] | None = None,
    trials: pd.DataFrame | None = None,
    covariates: pd.DataFrame | None = None,
) -> SignalModel:
    """Fit the ensemble configured for ``signal`` on ``frame`` (one column per series).

    Columns without labels get ``{}``; ``trials`` are the requests behind a ratio's rows
    (:func:`denominator_trials`); ``covariates`` the load signals its expectation follows
    (:func:`load_covariates`). The model's training-only data is dropped so that thousands of
    series fit in memory.
    """
    if frame.shape[1] == 0:
        raise ValueError(f"{signal.name}: no series to fit")
    params = signal.ensemble_params()
    # Every series of the signal follows the same load signals; none: time of day only.
    loads = () if covariates is None else tuple(str(c) for c in covariates.columns)
    params["explained_by"] = {"*": loads} if loads else None
    # A latency's load multiplies it; a KV cache's adds what the requests in flight hold.
    params["load_mode"] = "ratio" if is_latency_like(signal.name) else "shift"
    ensemble = Ensemble(**params).fit(frame, trials, covariates)
    ensemble.compact()
    t = seconds(frame.index)
    labels = labels or {}
    return SignalModel(
        signal=signal.name,
        ensemble=ensemble,
        labels={str(c): dict(labels.get(str(c), {})) for c in frame.columns},
        training_start=float(t[0]),
        training_end=float(t[-1]),
        params={
            **params,
            "families": list(params["families"]),
            "explained_by": list(loads),
            "step": signal.step,
        },
        step=signal.step,
        seen_until=float(t[-1]),
    )


def train_signal(
    settings: DetectorSettings,
    signal: SignalSettings,
    source: Source,
    registry: ModelRegistry,
    *,
    end: float | None = None,
    shard: bool = True,
) -> ModelVersion | None:
    """Fetch the training window of ``signal``, fit and publish it; None when no series can fit.

    ``end`` defaults to now; the window is ``settings.training_window`` before it (or what
    exists). With ``shard`` only the series this replica owns are fitted.
    """
    end = time.time() if end is None else end
    batch = source.fetch(signal, end - settings.training_window, end)
    frame = batch.frame
    owner = settings.shard_spec if shard else Shard()
    frame = frame[[c for c in frame.columns if owner.owns(signal.name, batch.labels[c])]]
    columns = trainable_columns(frame, settings.min_train_points, settings.min_train_span)
    if not columns:
        _log.info("%s: no series has enough history to fit yet", signal.name)
        return None
    frame = frame[columns]
    trials = None
    if signal.denominator is not None:
        rates = source.fetch(
            settings.signal(signal.denominator), end - settings.training_window, end
        )
        trials = denominator_trials(frame, rates.frame, signal.step)
    loads = {
        name: source.fetch(settings.signal(name), end - settings.training_window, end).frame
        for name in settings.load_signals(signal.name)
    }
    covariates = load_covariates(frame, loads)
    model = fit_signal_model(frame, signal, batch.labels, trials, covariates)
    folder = registry_name(signal.name, owner)
    version = registry.publish(
        folder,
        model,
        training_start=model.training_start,
        training_end=model.training_end,
        data_hash=data_hash(frame),
        params={**model.params, "series": len(columns), "shard": str(owner)},
        evaluation=model.evaluation,
    )
    # Versions beyond the newest few go (never the current one, nor one a rollback pins).
    registry.prune(folder, keep=settings.model_versions_kept)
    return version
