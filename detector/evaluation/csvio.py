"""Reading the backtest's input CSV and writing its output, with one-line reasons for bad input."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["InputError", "read_series_csv", "write_scores_csv"]

_log = logging.getLogger(__name__)


class InputError(ValueError):
    """The input cannot be used; the message is one line that says why."""


# Timestamps outside these bounds are typing or unit mistakes (milliseconds read as seconds, a
# year of 0001), not monitoring data; the upper one also keeps every instant in datetime64[ns].
_EARLIEST = pd.Timestamp("1970-01-01")
_LATEST = pd.Timestamp("2200-01-01")
_SPAN = f"{_EARLIEST:%Y-%m-%d} to {_LATEST:%Y-%m-%d}"
_LATEST_S = (_LATEST - _EARLIEST) / pd.Timedelta(1, "s")


def _parse_timestamps(raw: pd.Series, path: Path) -> pd.DatetimeIndex:
    """Parse the timestamp column in file order; refuse the first bad one by its data row.

    A column holds Unix seconds or ISO-8601 (naive means UTC), not both: a number among
    ISO-8601 stamps (``20260105``) is ambiguous, so a mix is refused rather than guessed.
    """
    text = raw.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    is_number = ~np.isnan(numeric)
    iso = pd.to_datetime(text.where(~is_number), errors="coerce", utc=True, format="ISO8601")
    iso_seconds = ((iso - _EARLIEST.tz_localize("UTC")) / pd.Timedelta(1, "s")).to_numpy(
        np.float64, na_value=np.nan
    )
    seconds = np.where(is_number, numeric, iso_seconds)
    unparseable = np.isnan(seconds)
    # ±inf and 1e20 fail the bounds here, before pandas' own overflow error, which names no file.
    out_of_range = ~unparseable & ~((seconds >= 0) & (seconds < _LATEST_S))
    mixed = is_number != is_number[0]
    problem = unparseable | out_of_range | mixed
    if problem.any():
        row = int(np.argmax(problem))
        where = f"timestamp {raw.iloc[row]!r} on data row {row + 1}"
        if unparseable[row]:
            raise InputError(
                f"{path}: unparseable {where} (expected ISO-8601 or Unix seconds, {_SPAN})"
            )
        if out_of_range[row]:
            hint = ""
            if is_number[row] and 0 <= seconds[row] / 1000 < _LATEST_S:
                hint = "; Unix seconds are expected, this looks like milliseconds"
            raise InputError(f"{path}: {where} is outside {_SPAN}{hint}")
        this, first = (
            ("Unix seconds", "ISO-8601") if is_number[row] else ("ISO-8601", "Unix seconds")
        )
        raise InputError(
            f"{path}: {where} is {this} but data row 1 ({raw.iloc[0]!r}) is {first}; "
            "use one format for the whole column"
        )
    if is_number.all():
        return pd.DatetimeIndex(pd.to_datetime(numeric, unit="s"))
    return pd.DatetimeIndex(iso).tz_convert("UTC").tz_localize(None)


def _duplicates_note(index: pd.DatetimeIndex, raw: pd.Series, path: Path) -> str:
    """One line on the rows of ``index`` (in file order) that repeat an earlier instant."""
    repeated = index.duplicated(keep="first")
    row = int(np.argmax(repeated))
    first = int(np.argmax(index == index[row]))
    count = int(repeated.sum())
    rows = "1 row repeats" if count == 1 else f"{count} rows repeat"
    return (
        f"{path}: {rows} an earlier timestamp (first {raw.iloc[row]!r} on data row {row + 1}, "
        f"the instant of data row {first + 1}); merged into one row per instant, each signal "
        "keeping its last non-empty value"
    )


def read_series_csv(
    path: str | Path, *, warn: Callable[[str], object] = _log.warning
) -> tuple[pd.DataFrame, pd.Series]:
    """Read ``timestamp,<signal>...``; return the signals and the input's timestamps.

    Timestamps are ISO-8601 (naive means UTC) or Unix seconds, one format per file, from
    1970-01-01 (included) to 2200-01-01 (excluded). Empty cells, ``nan``, ``NA``, ``null`` and
    ``inf``/``-inf`` values are gaps (NaN), as they are for the service.

    Rows with the same instant (two exports appended, NAB's repeated hours) are merged, each
    signal keeping its last non-empty value in file order, and ``warn`` gets one line saying
    how many rows repeat and where the first one is: scoring an instant twice would count it
    twice, and a zero step between rows means nothing to the detectors.

    Returns the signals, one row per instant in time order, and the timestamp text of every
    input row in time order (stable), indexed by its instant, for :func:`write_scores_csv`.

    Raises :class:`InputError`, a one-line message that starts with the file name, for an empty
    file, a missing ``timestamp`` column, no signal columns, or a value or timestamp that does
    not parse or is out of range. Rows in messages are data rows: 1 is the first row after the
    header, blank lines are not counted.

    (The function is long for this docstring: the CSV contract is written down where it is read.)
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
        number = num.to_numpy(np.float64)
        values[name] = np.where(np.isinf(number), np.nan, number)
    frame = pd.DataFrame(values, index=index)
    frame.index.name = "timestamp"
    order = np.argsort(index.asi8, kind="stable")
    original = pd.Series(raw["timestamp"].to_numpy()[order], index=index[order], name="timestamp")
    frame = frame.iloc[order]
    if not index.is_unique:
        warn(_duplicates_note(index, raw["timestamp"], path))
        frame = frame.groupby(level="timestamp").last()  # last non-NaN per column, time-sorted
    return frame, original


def write_scores_csv(path: str | Path, timestamps: pd.Series, scores: pd.DataFrame) -> None:
    """Write the backtest output with the input's own timestamp text, atomically.

    One output row per timestamp. Where there are fewer score rows, ``timestamps`` is indexed by
    instant (as :func:`read_series_csv` returns it) and rows sharing an instant, merged when
    read, each get that instant's scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(scores) != len(timestamps):
        scores = scores.loc[timestamps.index]
    out = scores.reset_index(drop=True)
    out.insert(0, "timestamp", timestamps.to_numpy())
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
