"""The labelled side of the Numenta Anomaly Benchmark (NAB): data files, anomaly windows, probation.

NAB's corpus is ``data/<category>/<file>.csv`` (``timestamp,value``) plus
``labels/combined_windows.json`` (inclusive ``[start, end]`` windows per file); the first 15 %
of each file (at most 750 rows) is a probationary period that is never scored.
:mod:`detector.evaluation.nab` scores detections against these windows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Windows", "load_corpus", "load_windows", "probationary_length", "window_rows"]

_PROBATION_FRACTION = 0.15
# NAB caps the probationary period as if files were at most 5000 rows long.
_PROBATION_ROW_CAP = 5000

Windows = list[tuple[pd.Timestamp, pd.Timestamp]]


def _to_naive_utc(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def load_windows(path: str | Path) -> dict[str, Windows]:
    """Load NAB anomaly windows (e.g. ``labels/combined_windows.json``).

    Parameters
    ----------
    path : str or Path
        JSON file mapping ``"<category>/<file>.csv"`` to ``[start, end]`` pairs.

    Returns
    -------
    dict of str to Windows
        Inclusive windows as naive UTC timestamps, in file order.
    """
    raw = json.loads(Path(path).read_text())
    return {
        name: [(_to_naive_utc(start), _to_naive_utc(end)) for start, end in pairs]
        for name, pairs in raw.items()
    }


def load_corpus(nab_root: str | Path) -> dict[str, pd.DataFrame]:
    """Load the NAB data files under ``<nab_root>/data``.

    Parameters
    ----------
    nab_root : str or Path
        Folder holding ``data/<category>/<file>.csv``.

    Returns
    -------
    dict of str to DataFrame
        ``"<category>/<file>.csv"`` to a frame with a naive UTC
        ``DatetimeIndex`` named ``"timestamp"`` and a float column ``"value"``.
    """
    data_dir = Path(nab_root) / "data"
    corpus: dict[str, pd.DataFrame] = {}
    for csv in sorted(data_dir.glob("*/*.csv")):
        frame = pd.read_csv(csv, usecols=["timestamp", "value"])
        index = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"]), name="timestamp")
        values = frame["value"].to_numpy(dtype=float)
        corpus[f"{csv.parent.name}/{csv.name}"] = pd.DataFrame({"value": values}, index=index)
    return corpus


def probationary_length(n_rows: int) -> int:
    """Number of leading rows of a file that NAB does not score.

    Parameters
    ----------
    n_rows : int
        Length of the file.

    Returns
    -------
    int
        ``min(floor(0.15 * n_rows), 0.15 * 5000)``.

    Examples
    --------
    >>> probationary_length(4032), probationary_length(22695)
    (604, 750)
    """
    cap = _PROBATION_FRACTION * _PROBATION_ROW_CAP
    return int(min(math.floor(_PROBATION_FRACTION * n_rows), cap))


def window_rows(name: str, ts: np.ndarray, windows: Windows) -> tuple[np.ndarray, np.ndarray]:
    """First and last row of each window (first row >= start, last row <= end), by start.

    Parameters
    ----------
    name : str
        The file, for error messages.
    ts : ndarray
        The file's timestamps as naive UTC ``datetime64[ns]``.
    windows : Windows
        The file's anomaly windows.

    Returns
    -------
    (ndarray, ndarray)
        Row numbers (int64) of each window's first and last row.

    Raises
    ------
    ValueError
        If a window holds no row, or two windows overlap.
    """
    # No sortedness is required of the rows: NAB's machine_temperature_system_failure
    # steps back an hour once. Where window limits are timestamps of the file, as in
    # NAB, this equals NAB's exact-timestamp lookup.
    limits = sorted(
        (_to_naive_utc(a).to_datetime64(), _to_naive_utc(b).to_datetime64()) for a, b in windows
    )
    first = np.empty(len(limits), dtype=np.int64)
    last = np.empty(len(limits), dtype=np.int64)
    for j, (start, end) in enumerate(limits):
        at_or_after = np.flatnonzero(ts >= start)
        at_or_before = np.flatnonzero(ts <= end)
        if at_or_after.size == 0 or at_or_before.size == 0 or at_or_before[-1] < at_or_after[0]:
            raise ValueError(f"{name}: anomaly window {start} .. {end} contains no row")
        first[j], last[j] = at_or_after[0], at_or_before[-1]
    if np.any(first[1:] <= last[:-1]):
        raise ValueError(f"{name}: anomaly windows overlap")
    return first, last
