"""Where signal values come from: PromQL range queries, or CSV/Parquet files offline.

Both sources answer one question, :meth:`Source.fetch`: the values of a signal's series on the
step grid ``start, start + step, ..., end`` as a :class:`SeriesBatch`: a frame with one column per
series (keyed by its labels, ``__name__`` dropped) and the labels of each column. NaN and
infinite samples become missing values, which the detectors treat as gaps, never as anomalies.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from detector.evaluation.csvio import read_series_csv
from detector.service.config import PrometheusSettings, SignalSettings
from detector.service.prometheus_client import PrometheusClient, PrometheusError, RangeSeries

__all__ = [
    "MAX_POINTS",
    "FileSource",
    "PrometheusSource",
    "SeriesBatch",
    "Source",
    "SourceError",
    "grid",
    "series_key",
]

# Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS = 11_000


class SourceError(RuntimeError):
    """A query failed (unreachable, timed out, refused, malformed); the message says which and why.

    ``unreachable`` is true when the server did not answer at all (connection refused, timeout):
    other queries to it would fail the same way. ``__cause__`` is the client's typed error
    (:class:`~detector.service.prometheus_client.PrometheusError`).
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def series_key(labels: Mapping[str, str]) -> str:
    """A stable column name for a series: its labels, sorted, in PromQL selector form.

    >>> series_key({"model": "qwen", "__name__": "x", "gpu": "0"})
    '{gpu="0",model="qwen"}'
    """
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels) if k != "__name__")
    return "{" + inner + "}"


def grid(start: float, end: float, step: float) -> np.ndarray:
    """Timestamps ``k * step`` within ``[start, end]``, as floats.

    >>> grid(61, 250, 60).tolist()
    [120.0, 180.0, 240.0]
    """
    first = math.ceil(start / step) * float(step)
    last = math.floor(end / step) * float(step)
    if last < first:
        return np.zeros(0)
    return first + step * np.arange(round((last - first) / step) + 1)


@dataclass(frozen=True)
class SeriesBatch:
    """Values of one signal's series: ``frame`` rows are timestamps, columns series keys."""

    frame: pd.DataFrame
    labels: dict[str, dict[str, str]]

    @classmethod
    def empty(cls) -> SeriesBatch:
        """No rows, no series."""
        return cls(pd.DataFrame(index=pd.DatetimeIndex([], name="timestamp")), {})


def _frame(columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    stamps = np.unique(np.concatenate([t for t, _ in columns.values()])) if columns else []
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(stamps, dtype=np.float64), unit="s"))
    out = np.full((len(index), len(columns)), np.nan)
    for j, (t, v) in enumerate(columns.values()):
        out[np.searchsorted(stamps, t), j] = v
    out[~np.isfinite(out)] = np.nan
    frame = pd.DataFrame(out, index=index, columns=list(columns))
    frame.index.name = "timestamp"
    return frame


class Source(Protocol):
    """Anything that returns a signal's series over a time range."""

    def fetch(self, signal: SignalSettings, start: float, end: float) -> SeriesBatch:
        """Series values on the signal's step grid within ``[start, end]`` (unix seconds)."""


class PrometheusSource:
    """Range queries against a Prometheus-compatible API, split to respect ``MAX_POINTS``.

    Queries go through one :class:`~detector.service.prometheus_client.PrometheusClient` (one
    connection pool), which retries transient failures briefly within ``settings.timeout``; longer
    waits are the caller's (the service backs off between cycles). A copy pickled into a fit
    worker travels as its settings and opens its own pool.
    """

    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        self._client = PrometheusClient.from_settings(settings)
        # Copies in fit workers are never closed by hand: their pools close when collected.
        self._release = weakref.finalize(self, self._client.close)

    def __reduce__(self) -> tuple[type[PrometheusSource], tuple[PrometheusSettings]]:
        return type(self), (self.settings,)

    def close(self) -> None:
        """Release the HTTP connection pool (again: nothing)."""
        self._release()

    def fetch(self, signal: SignalSettings, start: float, end: float) -> SeriesBatch:
        """Series values on the step grid within ``[start, end]``; raises :class:`SourceError`."""
        stamps = grid(start, end, signal.step)
        columns: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        labels: dict[str, dict[str, str]] = {}
        for lo in range(0, stamps.size, MAX_POINTS):
            chunk = stamps[lo : lo + MAX_POINTS]
            for metric, t, v in self._query(signal, float(chunk[0]), float(chunk[-1])):
                key = series_key(metric)
                labels.setdefault(key, {k: x for k, x in metric.items() if k != "__name__"})
                columns.setdefault(key, []).append((t, v))
        merged = {
            k: (np.concatenate([t for t, _ in p]), np.concatenate([v for _, v in p]))
            for k, p in columns.items()
        }
        return SeriesBatch(_frame(merged), labels)

    def _query(self, signal: SignalSettings, start: float, end: float) -> list[RangeSeries]:
        try:
            found = self._client.query_range(signal.query, start, end, signal.step)
        except PrometheusError as exc:
            raise SourceError(f"{signal.name}: {exc}", unreachable=exc.unreachable) from exc
        # Only what was asked for, whatever a server aligns its answer to.
        kept = [(s, (s.times >= start) & (s.times <= end)) for s in found]
        return [RangeSeries(s.labels, s.times[keep], s.values[keep]) for s, keep in kept]


_COLUMN = re.compile(r"^(?P<name>[^{]+)(?P<labels>\{.*\})?$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in (".parquet", ".pq"):
        return read_series_csv(path)[0]
    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:  # pandas needs pyarrow (or fastparquet) for Parquet
        raise ValueError(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    if "timestamp" in frame.columns:
        frame = frame.set_index("timestamp")
    index = pd.to_datetime(frame.index, utc=True).tz_localize(None)
    return frame.set_axis(pd.DatetimeIndex(index), axis=0).astype(np.float64)


class FileSource:
    """Signals read from CSV or Parquet files, for offline training and replay.

    Columns are named after signals, optionally with labels in selector form
    (``latency_p95{model="qwen"}``); each column is one series. The file has a ``timestamp``
    column (ISO-8601 or unix seconds; for Parquet also a datetime index).
    """

    def __init__(self, path: str | Path, frame: pd.DataFrame | None = None) -> None:
        """Read ``path``, or serve ``frame`` (a time index, columns named as in a file) as if
        read from it."""
        self.path = Path(path)
        if frame is None:
            frame = _read_table(self.path)
        self._columns: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for column in frame.columns:
            match = _COLUMN.match(str(column).strip())
            if match is None:
                continue
            labels = dict(_LABEL.findall(match.group("labels") or ""))
            self._columns.setdefault(match.group("name"), []).append((str(column), labels))
        self.frame = frame.replace([np.inf, -np.inf], np.nan).sort_index()

    def fetch(self, signal: SignalSettings, start: float, end: float) -> SeriesBatch:
        """The signal's columns within ``[start, end]``, values at or before each grid point."""
        found = self._columns.get(signal.name, [])
        stamps = grid(start, end, signal.step)
        if not found or stamps.size == 0:
            return SeriesBatch.empty()
        index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="s"), name="timestamp")
        # Like PromQL's instant lookups: each grid point takes the latest value within one step.
        picked = self.frame[[c for c, _ in found]].reindex(
            index, method="ffill", tolerance=pd.Timedelta(seconds=signal.step)
        )
        keys = {series_key(lab): (col, lab) for col, lab in found}
        frame = pd.DataFrame(
            {k: picked[col].to_numpy() for k, (col, _) in keys.items()}, index=index
        )
        return SeriesBatch(frame, {k: lab for k, (_, lab) in keys.items()})
