"""Reading the backtest's input CSV and writing its output, with one-line reasons for bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["InputError", "read_series_csv", "write_scores_csv"]


class InputError(ValueError):
    """The input cannot be used; the message is one line that says why."""


def _parse_timestamps(raw: pd.Series, path: Path) -> pd.DatetimeIndex:
    text = raw.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        return pd.DatetimeIndex(pd.to_datetime(numeric.to_numpy(np.float64), unit="s"))
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise InputError(
            f"{path}: unparseable timestamp {raw.iloc[row]!r} on data row {row + 1} "
            "(expected ISO-8601 or Unix seconds)"
        )
    return pd.DatetimeIndex(parsed).tz_convert("UTC").tz_localize(None)


def read_series_csv(path: str | Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read ``timestamp,<signal>...``; return the signals (time-sorted) and the original timestamps.

    Empty cells are gaps (NaN). Raises :class:`InputError` for an empty file, a missing
    ``timestamp`` column, no signal columns, or a value or timestamp that does not parse.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A trailing comma on each row is an empty last column, not a lost value.
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            raw = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False
            )
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: not a readable CSV ({reason})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if "timestamp" not in raw.columns:
        raise InputError(f"{path}: no 'timestamp' column (header is {','.join(raw.columns)})")
    signals = [c for c in raw.columns if c != "timestamp"]
    if not signals:
        raise InputError(f"{path}: no signal columns beside 'timestamp'")
    if raw.empty:
        raise InputError(f"{path}: no data rows")
    index = _parse_timestamps(raw["timestamp"], path)
    values = {}
    for name in signals:
        text = raw[name].str.strip()
        missing = text.isin(["", "nan", "NaN", "NA", "null"])
        num = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = num.isna() & ~missing
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise InputError(
                f"{path}: unparseable value {raw[name].iloc[row]!r} in column {name!r} "
                f"on data row {row + 1}"
            )
        values[name] = num.to_numpy(np.float64)
    frame = pd.DataFrame(values, index=index)
    frame.index.name = "timestamp"
    order = np.argsort(index.asi8, kind="stable")
    original = raw["timestamp"].iloc[order].reset_index(drop=True)
    return frame.iloc[order], original


def write_scores_csv(path: str | Path, timestamps: pd.Series, scores: pd.DataFrame) -> None:
    """Write the backtest output with the input's own timestamp text, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = scores.reset_index(drop=True)
    out.insert(0, "timestamp", timestamps.to_numpy())
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
