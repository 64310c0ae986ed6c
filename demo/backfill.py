"""History for a Prometheus that has none: series as OpenMetrics, turned into TSDB blocks.

``promtool tsdb create-blocks-from openmetrics`` writes days of samples as blocks in seconds. Run
it into the data folder *before* the Prometheus using that folder starts (a running one only picks
up new blocks at its next reload), and keep the history in the past: the blocks must end before
the samples Prometheus scrapes itself begin.

The demo (:mod:`demo.demo`) seeds its Prometheus this way, and the tests build their
histories with the same functions.

>>> s = Series("llmwatch:error_ratio", {}, np.array([60.0, 120.0]), np.array([0.01, np.nan]))
>>> print(openmetrics_text([s]), end="")
# TYPE llmwatch:error_ratio gauge
llmwatch:error_ratio 0.01 60.000
llmwatch:error_ratio NaN 120.000
# EOF
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.core.timeutil import DAY_S

__all__ = [
    "PROMTOOL",
    "BackfillError",
    "Series",
    "backfill_prometheus",
    "daily_series",
    "format_value",
    "grid_times",
    "openmetrics_text",
]

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


class BackfillError(RuntimeError):
    """promtool refused the history; the message carries its output."""


@dataclass
class Series:
    """One series to backfill or import: timestamps in unix seconds, values as floats."""

    name: str
    labels: dict[str, str]
    timestamps: np.ndarray
    values: np.ndarray

    def selector(self) -> str:
        """``name{label="value",...}`` with the labels sorted (the name alone without labels)."""
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}" if inner else self.name


def format_value(value: float) -> str:
    """A sample value as the exposition formats write it (NaN, +Inf, -Inf, or repr)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def openmetrics_text(series: Iterable[Series]) -> str:
    """OpenMetrics exposition of ``series`` with timestamps, grouped by metric family."""
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    lines = []
    for name, group in by_name.items():
        lines.append(f"# TYPE {name} gauge")
        for s in group:
            sel = s.selector()
            lines.extend(
                f"{sel} {format_value(v)} {t:.3f}"
                for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill_prometheus(
    data_dir: Path,
    series: Sequence[Series],
    *,
    promtool: str = PROMTOOL,
    nice: int = 0,
    timeout: float = 600,
) -> None:
    """Write ``series`` as TSDB blocks into ``data_dir``, before Prometheus starts on it.

    ``nice`` runs promtool at that niceness (it keeps both cores busy for seconds). Raises
    :class:`BackfillError` with promtool's output when it fails.
    """
    argv = [promtool] if not nice else [shutil.which("nice") or "nice", "-n", str(nice), promtool]
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="backfill-") as tmp:
        src = Path(tmp) / "input.om"
        src.write_text(openmetrics_text(series), encoding="utf-8")
        done = subprocess.run(
            [*argv, "tsdb", "create-blocks-from", "openmetrics", str(src), str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise BackfillError(f"promtool failed ({done.returncode}): {done.stderr[-2000:]}")


def grid_times(start: float, end: float, step: float) -> np.ndarray:
    """Timestamps ``k * step`` within ``[start, end]`` (the detector queries the same grid).

    >>> grid_times(55.0, 130.0, 30.0).tolist()
    [60.0, 90.0, 120.0]
    """
    first = np.ceil(start / step) * step
    return np.arange(first, end + step / 2, step)


def daily_series(
    name: str,
    labels: dict[str, str],
    t: np.ndarray,
    *,
    base: float = 1.0,
    amplitude: float = 0.3,
    noise: float = 0.03,
    seed: int = 0,
) -> Series:
    """A series with a daily cycle (peak at 14:00 UTC) and Gaussian noise, relative to ``base``."""
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * ((t % DAY_S) / DAY_S - 14 / 24)
    values = base + amplitude * base * np.cos(phase) + noise * base * rng.normal(size=t.size)
    return Series(name, dict(labels), t.astype(np.float64), values)
