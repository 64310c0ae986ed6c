"""Pulling history for the notebooks: settings, time ranges, a week of every signal in pandas.

History comes through the service's own :class:`~detector.service.source.PrometheusSource`, so a
notebook sees exactly the values, grid and gaps the detector sees. A signal's frame has one column
per
series keyed as the service keys it (:func:`~detector.service.source.series_key`);
:func:`readable` renames them for titles and legends (``gpu_memory_used_mb{device="0"}``).

Examples
--------
>>> resolve_time("now-7d", now=1_000_000.0)
395200.0
>>> resolve_time("2026-01-05T00:00:00Z")
1767571200.0
>>> column_label("rps", "{}"), column_label("mem", '{device="0"}')
('rps', 'mem{device="0"}')
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detector.core.timeutil import seconds
from detector.service.config import DetectorSettings, SignalSettings, load_settings
from detector.service.source import PrometheusSource, SeriesBatch, Source
from detector.service.training import (
    SignalModel,
    fit_signal_model,
    load_covariates,
    trainable_columns,
)
from llmwatch.durations import parse_duration

__all__ = [
    "History",
    "column_label",
    "fit_models",
    "history_summary",
    "notebook_settings",
    "pull_history",
    "readable",
    "resolve_time",
    "signal_table",
    "unit_of",
]

_log = logging.getLogger(__name__)

# signal name -> the series of that signal over the pulled range
History = dict[str, SeriesBatch]

_RELATIVE = re.compile(r"^now\s*(?:(?P<sign>[-+])\s*(?P<amount>.+))?$")
# Units shown on axes, by how the recording rules name their signals.
_UNITS = (
    ("requests_per_second", "req/s"),
    ("_per_request", "per request"),
    ("_seconds", "s"),
    ("_mb", "MB"),
    ("_ratio", "fraction"),
)


def resolve_time(value: str | float | datetime, *, now: float | None = None) -> float:
    """Unix seconds of ``value``: ``"now"``, ``"now-7d"``, ISO-8601 (UTC unless it says), unix.

    Raises ``ValueError`` naming the value when it is none of these.
    """
    now = time.time() if now is None else float(now)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    match = _RELATIVE.match(text.lower())
    if match:
        if match.group("amount") is None:
            return now
        delta = parse_duration(match.group("amount").strip())
        return now - delta if match.group("sign") == "-" else now + delta
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {value!r}: use 'now', 'now-7d', ISO-8601 or unix seconds") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def notebook_settings(
    config: str | Path | None,
    *,
    prometheus_url: str | None = None,
    registry_root: str | Path | None = None,
    stack: Mapping[str, Any] | None = None,
) -> DetectorSettings:
    """The detector configuration at ``config`` with the notebook's URL and registry on top.

    What is None comes from ``stack`` (the running demo's ``var/demo/stack.json``, see
    :func:`~detector.workbench.offline.demo_stack`) where it names it; a config still None is
    the defaults of :func:`~detector.service.config.load_settings`.
    """
    stack = stack or {}
    config = config if config is not None else stack.get("config")
    prometheus_url = prometheus_url or stack.get("prometheus_url")
    registry_root = registry_root if registry_root is not None else stack.get("registry_root")
    overrides: dict[str, Any] = {}
    if prometheus_url:
        overrides["prometheus"] = {"url": prometheus_url}
    if registry_root is not None:
        overrides["registry_root"] = Path(registry_root)
    return load_settings(config, **overrides)


def signal_table(settings: DetectorSettings) -> pd.DataFrame:
    """The configured signals, one row each: query, step, direction, seasonality, detectors."""
    rows = [
        {
            "signal": s.name,
            "query": s.query,
            "step_s": s.step,
            "direction": s.direction,
            "seasonality": s.seasonality,
            "detectors": ", ".join(s.detectors),
            "enter": s.thresholds.enter,
            "leave": s.thresholds.leave,
            "unit": unit_of(s.name),
        }
        for s in settings.signals
    ]
    return pd.DataFrame(rows).set_index("signal")


def _chosen(settings: DetectorSettings, signals: Iterable[str] | None) -> list[SignalSettings]:
    if signals is None:
        return list(settings.signals)
    return [settings.signal(name) for name in signals]


def pull_history(
    settings: DetectorSettings,
    start: float,
    end: float,
    *,
    signals: Iterable[str] | None = None,
    source: Source | None = None,
) -> History:
    """Every configured signal (or those named) over ``[start, end]``, as the service pulls it.

    Raises :class:`~detector.service.source.SourceError` when Prometheus cannot be queried.
    """
    if end <= start:
        raise ValueError(f"the range is empty: end {end} is not after start {start}")
    own = source is None
    src = source if source is not None else PrometheusSource(settings.prometheus)
    try:
        return {s.name: src.fetch(s, start, end) for s in _chosen(settings, signals)}
    finally:
        close = getattr(src, "close", None)
        if own and close is not None:
            close()


def column_label(signal: str, key: str) -> str:
    """A series' display name: the signal, with its labels when it has any."""
    return signal if key in ("", "{}") else f"{signal}{key}"


def readable(history: History) -> pd.DataFrame:
    """All series of all signals in one frame, columns named by :func:`column_label`."""
    parts = [
        batch.frame.rename(columns=lambda key, name=name: column_label(name, str(key)))
        for name, batch in history.items()
        if batch.frame.shape[1]
    ]
    if not parts:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="timestamp"))
    return pd.concat(parts, axis=1).sort_index()


def unit_of(signal: str) -> str:
    """The unit of a signal's values, from its name (``""`` when the name does not say).

    >>> unit_of("latency_p95_seconds"), unit_of("requests_per_second"), unit_of("x")
    ('s', 'req/s', '')
    """
    for suffix, unit in _UNITS:
        if signal.endswith(suffix):
            return unit
    return ""


def history_summary(history: History) -> pd.DataFrame:
    """One row per series: points, share missing, first and last time, min / median / max."""
    rows = []
    for name, batch in history.items():
        frame = batch.frame
        for key in frame.columns:
            values = frame[key].to_numpy(dtype=np.float64)
            ok = np.isfinite(values)
            rows.append(
                {
                    "series": column_label(name, str(key)),
                    "signal": name,
                    "points": int(ok.sum()),
                    "missing": float(1.0 - ok.mean()) if values.size else 1.0,
                    "first": frame.index[ok][0] if ok.any() else pd.NaT,
                    "last": frame.index[ok][-1] if ok.any() else pd.NaT,
                    "min": float(np.nanmin(values)) if ok.any() else np.nan,
                    "median": float(np.nanmedian(values)) if ok.any() else np.nan,
                    "max": float(np.nanmax(values)) if ok.any() else np.nan,
                }
            )
    columns = ["series", "signal", "points", "missing", "first", "last", "min", "median", "max"]
    return pd.DataFrame(rows, columns=columns).set_index("series")


def fit_models(
    history: History,
    settings: DetectorSettings,
    *,
    signals: Mapping[str, SignalSettings] | None = None,
    display_names: bool = False,
) -> dict[str, SignalModel]:
    """Fit each signal's configured ensemble on its pulled history, as ``llmwatch train`` would.

    Series too short to fit (``min_train_points``, ``min_train_span``) are left out, and a
    signal with none is skipped (logged). ``signals`` replaces the configured settings of the
    signals it names. With ``display_names`` the model's columns are :func:`column_label` names
    (for figures); the service needs the series keys, so never publish such a model.
    """
    out = {}
    for name, batch in history.items():
        frame = batch.frame
        columns = trainable_columns(frame, settings.min_train_points, settings.min_train_span)
        if not columns:
            span = seconds(frame.index)
            days = (span[-1] - span[0]) / 86_400.0 if span.size else 0.0
            _log.warning("%s: no series has enough history to fit (%.1f days pulled)", name, days)
            continue
        signal = (signals or {}).get(name) or settings.signal(name)
        frame = frame[columns]
        if display_names:
            frame = frame.rename(columns=lambda key, n=name: column_label(n, str(key)))
        loads = {n: history[n].frame for n in settings.load_signals(name) if n in history}
        covariates = load_covariates(frame, loads)
        out[name] = fit_signal_model(frame, signal, batch.labels, None, covariates)
    return out
