"""Where signal values come from: PromQL range queries, or CSV/Parquet files offline.

Both sources answer one question, :meth:`Source.fetch`: the values of a signal's series on the
step grid ``start, start + step, ..., end`` as a :class:`SeriesBatch`: a frame with one column per
series (keyed by its labels, ``__name__`` dropped) and the labels of each column. NaN and
infinite samples become missing values, which the detectors treat as gaps, never as anomalies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from detector.evaluation.csvio import read_series_csv
from detector.service.config import PrometheusSettings, SignalSettings

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
    """A query failed (unreachable, timed out, refused); the message says which and why.

    ``unreachable`` is true when the server did not answer at all (connection refused, timeout):
    other queries to it would fail the same way.
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

    Retries are left to the caller (the service backs off between cycles), so a failing query
    costs one timeout, not a burst of hidden retries.
    """

    def __init__(self, settings: PrometheusSettings) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        headers = None
        if settings.bearer_token is not None:
            headers = {"Authorization": f"Bearer {settings.bearer_token.get_secret_value()}"}
        auth = None
        if settings.username is not None and settings.password is not None:
            auth = (settings.username, settings.password.get_secret_value())
        self.settings = settings
        self._client = PrometheusConnect(
            url=settings.url,
            headers=headers,
            auth=auth,
            disable_ssl=not settings.tls_verify,
            retry=Retry(total=0, raise_on_status=False),
            timeout=settings.timeout,
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def fetch(self, signal: SignalSettings, start: float, end: float) -> SeriesBatch:
        """Series values on the step grid within ``[start, end]``; raises :class:`SourceError`."""
        stamps = grid(start, end, signal.step)
        columns: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        labels: dict[str, dict[str, str]] = {}
        for lo in range(0, stamps.size, MAX_POINTS):
            chunk = stamps[lo : lo + MAX_POINTS]
            for metric, t, v in self._query(signal, float(chunk[0]), float(chunk[-1])):
                key = series_key(metric)
                labels.setdefault(key, {k: str(x) for k, x in metric.items() if k != "__name__"})
                columns.setdefault(key, []).append((t, v))
        merged = {
            k: (np.concatenate([t for t, _ in p]), np.concatenate([v for _, v in p]))
            for k, p in columns.items()
        }
        return SeriesBatch(_frame(merged), labels)

    def _query(
        self, signal: SignalSettings, start: float, end: float
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        import requests
        from prometheus_api_client import PrometheusApiClientException

        try:
            result = self._client.custom_query_range(
                signal.query,
                start_time=datetime.fromtimestamp(start, tz=UTC),
                end_time=datetime.fromtimestamp(end, tz=UTC),
                step=str(int(signal.step)),
            )
        except requests.JSONDecodeError:  # a 200 that is not JSON: an HTML error page, a proxy
            raise SourceError(f"{signal.name}: malformed answer (not JSON)") from None
        except requests.RequestException as exc:
            # With retries off, urllib3 reports a read timeout as a connection error.
            if isinstance(exc, requests.Timeout) or "timed out" in str(exc):
                why = f"query timed out after {self.settings.timeout:g} s"
            else:
                why = f"{self.settings.url} unreachable ({_cause(exc)})"
            raise SourceError(f"{signal.name}: {why}", unreachable=True) from None
        except PrometheusApiClientException as exc:
            raise SourceError(f"{signal.name}: query refused: {_short(str(exc))}") from None
        except (KeyError, TypeError, ValueError) as exc:  # JSON, but not a query result
            raise SourceError(f"{signal.name}: malformed answer ({_what(exc)})") from None
        try:
            return _series(result, start, end)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise SourceError(f"{signal.name}: malformed answer ({_what(exc)})") from None


def _series(
    result: object, start: float, end: float
) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """The ``(labels, times, values)`` of a range query's result; raises on a malformed one."""
    if not isinstance(result, list):
        raise TypeError(f"result is a {type(result).__name__}, not a list of series")
    out = []
    for item in result:
        values = item.get("values") or []
        if not values:
            continue
        arr = np.asarray(values, dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"values of shape {arr.shape}, not [time, value] pairs")
        t = arr[:, 0].astype(np.float64)
        # Prometheus writes NaN and +Inf/-Inf as strings; float() reads them all.
        v = np.array([float(x) for x in arr[:, 1]], dtype=np.float64)
        keep = (t >= start) & (t <= end)
        metric = item.get("metric") or {}
        out.append(({str(k): str(x) for k, x in metric.items()}, t[keep], v[keep]))
    return out


def _what(exc: Exception) -> str:
    """A malformed answer's defect in a few words."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    return _short(f"{type(exc).__name__}: {exc}")


def _cause(exc: Exception) -> str:
    # urllib3 nests the reason in a long repr; the errno line is what an operator needs.
    match = re.search(r"\[Errno -?\d+\] [^'\")]*", str(exc))
    return match.group(0) if match else type(exc).__name__


def _short(text: str) -> str:
    match = re.search(r'"error"\s*:\s*"([^"]*)"', text)
    return match.group(1) if match else text[:300]


_COLUMN = re.compile(r"^(?P<name>[^{]+)(?P<labels>\{.*\})?$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class FileSource:
    """Signals read from CSV or Parquet files, for offline training and replay.

    Columns are named after signals, optionally with labels in selector form
    (``latency_p95{model="qwen"}``); each column is one series. The file has a ``timestamp``
    column (ISO-8601 or unix seconds; for Parquet also a datetime index).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() in (".parquet", ".pq"):
            try:
                frame = pd.read_parquet(self.path)
            except ImportError as exc:  # pandas needs pyarrow (or fastparquet) for Parquet
                raise ValueError(f"{self.path}: reading Parquet needs pyarrow ({exc})") from None
            if "timestamp" in frame.columns:
                frame = frame.set_index("timestamp")
            index = pd.to_datetime(frame.index, utc=True).tz_localize(None)
            frame = frame.set_axis(pd.DatetimeIndex(index), axis=0).astype(np.float64)
        else:
            frame, _ = read_series_csv(self.path)
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
