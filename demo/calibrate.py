"""Measure the live level and noise of each recorded signal, so that seeded history matches them.

A fresh stack has no history, and history that does not match the live traffic makes the
detector flag the live data at once. So the demo first runs the real stack for a minute (the
calibration), then asks Prometheus, for each recording rule ``llmwatch:<signal>`` and each series
it returns:

- the **level**: the median of the recorded values over the calibration window;
- the **noise**: the standard deviation of the same expression over short, non-overlapping
  windows (``[1m]`` rewritten to ``[W]``), scaled to the rule's own window by ``sqrt(W / 1m)``:
  counts in a window grow with its length, so their relative spread shrinks with its square
  root. A minute of calibration holds one 1m window but a dozen short ones.

The labels of every measured series are the ones the live recording rule produces, which is what
the seeded history must carry (:mod:`demo.synth`).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo.series import SIGNAL_PREFIX, SIGNAL_VALUE
from demo.yamlio import load_yaml
from llmwatch.durations import parse_duration

__all__ = ["CalibrationError", "SeriesLevel", "measure_levels", "recorded_expressions"]

_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d|w|y))\]")


class CalibrationError(RuntimeError):
    """Prometheus could not be queried, or no signal had data."""


@dataclass(frozen=True)
class SeriesLevel:
    """One live series of a recorded signal: its labels, typical value and noise."""

    signal: str  # recording rule name without the llmwatch: prefix
    labels: dict[str, str]
    level: float  # median over the calibration window
    sigma: float  # standard deviation at the rule's own window
    points: int  # recorded values the level is the median of

    @property
    def metric(self) -> str:
        """The recorded series' name, ``llmwatch:<signal>``."""
        return SIGNAL_PREFIX + self.signal


def recorded_expressions(rules_path: Path) -> dict[str, str]:
    """``signal -> PromQL`` of each ``llmwatch:<signal>`` rule of a recording-rule file."""
    out: dict[str, str] = {}
    for group in load_yaml(rules_path).get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("record", "")
            if name.startswith(SIGNAL_PREFIX) and name != SIGNAL_VALUE:
                out.setdefault(name.removeprefix(SIGNAL_PREFIX), str(rule["expr"]))
    return out


def _query_range(
    url: str, expr: str, start: float, end: float, step: float, timeout: float
) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    )
    return _get(f"{url}/api/v1/query_range?{params}", expr, timeout)


def _get(url: str, expr: str, timeout: float) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise CalibrationError(f"query {expr!r} failed: {exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CalibrationError(f"cannot query Prometheus at {url}: {exc}") from None
    return list(body["data"]["result"])


def _labels(item: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in item["metric"].items() if k != "__name__"))


def _values(item: dict[str, Any]) -> np.ndarray:
    # A range query's "values", or an instant query's one "value".
    pairs = item["values"] if "values" in item else [item["value"]]
    values = np.array([float(v) for _, v in pairs], dtype=np.float64)
    return values[np.isfinite(values)]


def _query(url: str, expr: str, at: float, timeout: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    return _get(f"{url}/api/v1/query?{params}", expr, timeout)


def _windowed(expr: str, seconds: float) -> tuple[str, float]:
    """``expr`` with every range selector set to ``seconds``, and the rule's own window."""
    ranges = [parse_duration(m) for m in _RANGE.findall(expr)]
    return _RANGE.sub(f"[{round(seconds * 1000)}ms]", expr), max(ranges, default=0.0)


def _measure(
    url: str, signal: str, expr: str, start: float, end: float, window: float, timeout: float
) -> list[SeriesLevel]:
    whole, own = _windowed(expr, end - start)
    if own == 0.0:
        # No range in the rule (a gauge): the median and spread of what the calibration saw.
        items = _query_range(url, expr, start, end, window, timeout)
        return [
            SeriesLevel(signal, dict(_labels(i)), float(np.median(v)), float(np.std(v)), v.size)
            for i in items
            if (v := _values(i)).size
        ]
    # The level over the whole window: every request of the calibration counts once.
    levels = {_labels(i): v for i in _query(url, whole, end, timeout) if (v := _values(i)).size}
    short, _ = _windowed(expr, window)
    out = []
    for item in _query_range(url, short, start + window, end, window, timeout):
        key, values = _labels(item), _values(item)
        if key not in levels or values.size < 3:
            continue
        spread = float(np.std(values, ddof=1)) * math.sqrt(window / own)
        out.append(SeriesLevel(signal, dict(key), float(levels[key][0]), spread, values.size))
    return out


def measure_levels(
    prometheus_url: str,
    rules_path: Path,
    *,
    start: float,
    end: float,
    resolution: float = 1.0,
    short_window: float = 5.0,
    timeout: float = 30.0,
) -> list[SeriesLevel]:
    """Level and noise of every series of every recorded signal between ``start`` and ``end``.

    Parameters
    ----------
    prometheus_url
        The Prometheus that evaluated the rules during the calibration.
    rules_path
        The recording rules it runs (``configs/rules/recording.yml`` or a rendered copy).
    start, end
        The calibration window (unix seconds); begin it once the rules' windows hold traffic.
    resolution
        Step of the level query (the evaluation interval is a good choice).
    short_window
        Length of the short windows of the noise estimate: two scrape intervals at least.

    Raises :class:`CalibrationError` when Prometheus cannot answer or no signal has data.
    """
    if not end > start:
        raise ValueError(f"the calibration window is empty: start={start}, end={end}")
    url = prometheus_url.rstrip("/")
    levels = []
    for signal, expr in recorded_expressions(rules_path).items():
        levels += _measure(url, signal, expr, start, end, short_window, timeout)
    if not levels:
        raise CalibrationError(
            f"{url}: no recorded signal has data between {start:.0f} and {end:.0f}: "
            "is the load generator sending traffic, and Prometheus scraping the server?"
        )
    return levels
